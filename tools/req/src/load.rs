//! The closed-loop load run behind `req --concurrency N`.
//!
//! N workers share one keep-alive client (or, with `--ws`, each opens a
//! WebSocket of its own); each sends its next request only when the
//! previous one has answered, so the offered load adapts to the
//! server and the latencies measured are the ones a client would see. The
//! run stops at whichever limit comes first — a request count or a deadline
//! — and the deadline is hard: requests still in flight then are dropped and
//! counted as abandoned rather than waited for.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Client, Url};
use serde::Serialize;

use crate::payload::Payload;
use crate::ws::{self, Socket, WsError};

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// After this many requests have answered (or failed).
    Requests(u64),
    /// When this much time has passed.
    Duration(Duration),
    /// At whichever of the two comes first.
    RequestsWithin(u64, Duration),
}

impl Limit {
    /// The limit the options describe; `None` when neither is set, since a
    /// run without a limit would never stop.
    pub fn new(requests: Option<u64>, duration: Option<Duration>) -> Option<Self> {
        match (requests, duration) {
            (Some(requests), Some(duration)) => Some(Limit::RequestsWithin(requests, duration)),
            (Some(requests), None) => Some(Limit::Requests(requests)),
            (None, Some(duration)) => Some(Limit::Duration(duration)),
            (None, None) => None,
        }
    }

    pub fn requests(self) -> Option<u64> {
        match self {
            Limit::Requests(requests) | Limit::RequestsWithin(requests, _) => Some(requests),
            Limit::Duration(_) => None,
        }
    }

    pub fn duration(self) -> Option<Duration> {
        match self {
            Limit::Duration(duration) | Limit::RequestsWithin(_, duration) => Some(duration),
            Limit::Requests(_) => None,
        }
    }
}

/// How requests reach public-web.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST` to the URL, over pooled keep-alive connections.
    Http,
    /// The same with `Prefer: respond-async`: answered `202` at once, the
    /// answer going to the event stream.
    HttpAsync,
    /// Text frames on `GET /ws` of the URL's public-web, a socket per worker.
    WebSocket,
}

/// Everything a load run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// What is POSTed to, or with [`Transport::WebSocket`] the `/ws` URL.
    pub url: Url,
    pub transport: Transport,
    pub payload: Payload,
    /// Workers, and so requests in flight and pooled connections.
    pub concurrency: NonZeroUsize,
    pub limit: Limit,
    /// How long one request may take before it counts as a `timeout` error.
    pub timeout: Duration,
    /// Draw a progress bar on stderr (the caller checks it is a terminal).
    pub show_progress: bool,
    /// At most this many requests per second across all workers (`--rate`):
    /// a paced run for soaks, instead of as fast as the server answers.
    pub rate: Option<f64>,
}

/// What a run measured. Serializes to the one-line JSON `req --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// Answered requests (successes and errors) per second of the run.
    pub rps: f64,
    /// Latency percentiles of the successful requests, in milliseconds.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests that got an outcome: successes plus errors.
    pub requests: u64,
    pub errors: u64,
    pub concurrency: usize,
    /// Wall-clock length of the run.
    pub duration_s: f64,
    /// Errors by kind: the HTTP status code, or `timeout`, `connect`, `other`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Requests still in flight at the deadline, dropped unanswered and
    /// counted nowhere else.
    pub abandoned: u64,
}

impl LoadReport {
    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a report of numbers and strings always serializes")
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrorKind {
    /// The server answered with a status outside 2xx.
    Status(u16),
    Timeout,
    Connect,
    Other,
}

impl ErrorKind {
    fn of_ws(error: &WsError) -> Self {
        match error {
            WsError::Connect(_) => ErrorKind::Connect,
            WsError::Refused { status, .. } => ErrorKind::Status(*status),
            _ => ErrorKind::Other,
        }
    }

    fn of(error: &reqwest::Error) -> Self {
        // A connect that times out is both: the timeout is what the user set.
        if error.is_timeout() {
            ErrorKind::Timeout
        } else if error.is_connect() {
            ErrorKind::Connect
        } else {
            ErrorKind::Other
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Status(code) => write!(f, "{code}"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Other => f.write_str("other"),
        }
    }
}

/// Latencies are recorded in microseconds, up to an hour, to 3 significant
/// digits.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;
const HISTOGRAM_SIGFIGS: u8 = 3;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, HISTOGRAM_SIGFIGS)
        .expect("constant histogram bounds are valid")
}

/// What the workers share.
struct Shared {
    client: Client,
    url: Url,
    transport: Transport,
    /// How long one request may take.
    timeout: Duration,
    payload: Payload,
    limit: Limit,
    deadline: Option<Instant>,
    /// Requests started, to stop at the request limit.
    started: AtomicU64,
    /// Outcomes so far, for the progress bar.
    answered: AtomicU64,
    failed: AtomicU64,
    /// One tick per request slot when the run is paced.
    pacer: Option<tokio::sync::Mutex<tokio::time::Interval>>,
}

impl Shared {
    /// Whether a worker may start another request.
    fn claim(&self) -> bool {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return false;
        }
        match self.limit.requests() {
            Some(max) => self.started.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }
}

/// One worker's tally, merged into the report at the end.
struct WorkerStats {
    latencies: Histogram<u64>,
    errors: BTreeMap<ErrorKind, u64>,
    abandoned: u64,
}

/// Runs the load described by `config` and reports on it.
pub async fn run_load(config: LoadConfig) -> Result<LoadReport, reqwest::Error> {
    let concurrency = config.concurrency.get();
    let client = Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(config.timeout)
        .tcp_nodelay(true)
        .build()?;
    let begun = Instant::now();
    let shared = Arc::new(Shared {
        client,
        url: config.url,
        transport: config.transport,
        timeout: config.timeout,
        payload: config.payload,
        limit: config.limit,
        deadline: config.limit.duration().map(|duration| begun + duration),
        started: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        pacer: config.rate.filter(|rate| *rate > 0.0).map(|rate| {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // A slow answer must not be followed by a burst that catches up.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::sync::Mutex::new(interval)
        }),
    });

    let bar = progress_bar(config.limit, config.show_progress);
    let ticker = config
        .show_progress
        .then(|| tokio::spawn(tick(bar.clone(), shared.clone(), begun)));

    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut latencies = new_histogram();
    let mut errors = BTreeMap::<ErrorKind, u64>::new();
    let mut abandoned = 0;
    for worker in workers {
        let stats = match worker.await {
            Ok(stats) => stats,
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        };
        latencies
            .add(&stats.latencies)
            .expect("histograms with the same bounds merge");
        for (kind, count) in stats.errors {
            *errors.entry(kind).or_default() += count;
        }
        abandoned += stats.abandoned;
    }
    let elapsed = begun.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    bar.finish_and_clear();

    let error_count: u64 = errors.values().sum();
    let requests = latencies.len() + error_count;
    let elapsed_s = elapsed.as_secs_f64();
    Ok(LoadReport {
        rps: if elapsed_s > 0.0 {
            round3(requests as f64 / elapsed_s)
        } else {
            0.0
        },
        p50_ms: micros_to_ms(latencies.value_at_quantile(0.50)),
        p90_ms: micros_to_ms(latencies.value_at_quantile(0.90)),
        p99_ms: micros_to_ms(latencies.value_at_quantile(0.99)),
        max_ms: micros_to_ms(latencies.max()),
        requests,
        errors: error_count,
        concurrency,
        duration_s: round3(elapsed_s),
        errors_by_kind: errors
            .into_iter()
            .map(|(kind, count)| (kind.to_string(), count))
            .collect(),
        abandoned,
    })
}

/// Sends requests one after another until the limit says stop.
async fn worker(shared: Arc<Shared>) -> WorkerStats {
    let mut stats = WorkerStats {
        latencies: new_histogram(),
        errors: BTreeMap::new(),
        abandoned: 0,
    };
    // A worker's WebSocket, opened on its first request and again after a
    // failure.
    let mut socket = None;
    while shared.claim() {
        if let Some(pacer) = &shared.pacer {
            pacer.lock().await.tick().await;
        }
        let body = shared.payload.body();
        let sent = Instant::now();
        let exchange = async {
            match shared.transport {
                Transport::Http | Transport::HttpAsync => {
                    let respond_async = shared.transport == Transport::HttpAsync;
                    exchange(&shared.client, shared.url.clone(), body, respond_async).await
                }
                Transport::WebSocket => {
                    let answer = tokio::time::timeout(
                        shared.timeout,
                        ws_exchange(&mut socket, &shared.url, body),
                    )
                    .await;
                    answer.unwrap_or_else(|_| {
                        socket = None;
                        Err(ErrorKind::Timeout)
                    })
                }
            }
        };
        let outcome = match shared.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), exchange).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    stats.abandoned += 1;
                    break;
                }
            },
            None => exchange.await,
        };
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.latencies.saturating_record(micros.max(1));
            }
            Err(kind) => {
                *stats.errors.entry(kind).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.answered.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

/// One request, read to the end so its connection goes back to the pool.
async fn exchange(
    client: &Client,
    url: Url,
    body: Bytes,
    respond_async: bool,
) -> Result<(), ErrorKind> {
    let response = crate::payload::post_json(client, url, body, respond_async)
        .send()
        .await
        .map_err(|error| ErrorKind::of(&error))?;
    let status = response.status();
    let read = response.bytes().await;
    if !status.is_success() {
        return Err(ErrorKind::Status(status.as_u16()));
    }
    read.map(drop).map_err(|error| ErrorKind::of(&error))
}

/// One request over the worker's socket, opened first when there is none;
/// a transport failure drops it, so the next request opens another.
async fn ws_exchange(socket: &mut Option<Socket>, url: &Url, body: Bytes) -> Result<(), ErrorKind> {
    let open = match socket {
        Some(open) => open,
        None => socket.insert(
            Socket::connect(url, None)
                .await
                .map_err(|error| ErrorKind::of_ws(&error))?,
        ),
    };
    match open.request(body).await {
        Ok(answer) => match ws::answer_status(&answer) {
            200 => Ok(()),
            status => Err(ErrorKind::Status(status)),
        },
        Err(error) => {
            *socket = None;
            Err(ErrorKind::of_ws(&error))
        }
    }
}

fn progress_bar(limit: Limit, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    // By request count when there is one; otherwise by elapsed milliseconds.
    let (length, template) = match limit {
        Limit::Requests(requests) | Limit::RequestsWithin(requests, _) => {
            (requests, "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}")
        }
        Limit::Duration(duration) => (millis(duration), "{elapsed_precise} [{wide_bar}] {msg}"),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(length).with_style(style)
}

/// Refreshes the bar from the shared counters, so workers never touch it.
async fn tick(bar: ProgressBar, shared: Arc<Shared>, begun: Instant) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        interval.tick().await;
        let answered = shared.answered.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        // The message first: setting the position is what redraws.
        if shared.limit.requests().is_some() {
            bar.set_message(format!("{failed} err"));
            bar.set_position(answered);
        } else {
            bar.set_message(format!("{answered} req, {failed} err"));
            bar.set_position(millis(begun.elapsed()));
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn micros_to_ms(micros: u64) -> f64 {
    round3(micros as f64 / 1000.0)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_needs_a_count_or_a_duration() {
        assert_eq!(Limit::new(None, None), None);
        let both = Limit::new(Some(5), Some(Duration::from_secs(1))).unwrap();
        assert_eq!(both.requests(), Some(5));
        assert_eq!(both.duration(), Some(Duration::from_secs(1)));
        assert_eq!(Limit::new(Some(5), None).unwrap().duration(), None);
        assert_eq!(
            Limit::new(None, Some(Duration::ZERO)).unwrap().requests(),
            None
        );
    }

    #[test]
    fn error_kinds_name_themselves_for_the_report() {
        assert_eq!(ErrorKind::Status(422).to_string(), "422");
        assert_eq!(ErrorKind::Timeout.to_string(), "timeout");
        assert_eq!(ErrorKind::Connect.to_string(), "connect");
        assert_eq!(ErrorKind::Other.to_string(), "other");
    }

    #[test]
    fn milliseconds_keep_microsecond_resolution() {
        assert_eq!(micros_to_ms(1_234), 1.234);
        assert_eq!(micros_to_ms(0), 0.0);
    }
}
