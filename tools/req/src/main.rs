//! `req`: send one event to public-web and show what came back, or load it
//! with `--concurrency N --requests M | --duration D` and report throughput,
//! latency percentiles and errors.

use std::io::IsTerminal;
use std::num::{NonZeroU64, NonZeroUsize};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Parser};
use req::payload::PING_REQUEST;
use req::{Limit, LoadConfig, LoadReport, Payload, grafana, single};
use reqwest::Url;
use serde_json::{Value, json};

const DEFAULT_PUBLIC_WEB_URL: &str = "http://127.0.0.1:3000";
const DEFAULT_GRAFANA_URL: &str = "http://127.0.0.1:3300";

/// Send events to public-web ($PUBLIC_WEB_URL, default http://127.0.0.1:3000).
///
/// Without flags: one PingRequest, its response, the listener's delay, the
/// round trip and, when traced, a Grafana link to the trace ($GRAFANA_URL,
/// default http://127.0.0.1:3300). With --requests or --duration: a
/// closed-loop load run.
#[derive(Debug, Parser)]
#[command(name = "req", version)]
#[command(group(ArgGroup::new("limit").multiple(true).args(["requests", "duration"])))]
struct Cli {
    /// Event type to send instead of a PingRequest.
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// The event's data as JSON (default {}).
    #[arg(long, value_name = "JSON", requires = "kind", value_parser = parse_json)]
    data: Option<Value>,
    /// Path on public-web to POST to (e.g. /ping, answered without the broker).
    #[arg(long, default_value = "/")]
    path: String,
    /// Load: requests in flight at once [default: 1].
    #[arg(long, value_name = "N", requires = "limit")]
    concurrency: Option<NonZeroUsize>,
    /// Load: stop after this many requests.
    #[arg(long, value_name = "M")]
    requests: Option<NonZeroU64>,
    /// Load: stop after this long (e.g. 10s, 1m30s); in-flight requests are dropped.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Load: send at most this many requests per second (paced, for soaks).
    #[arg(long, value_name = "PER_SECOND", requires = "limit")]
    rate: Option<f64>,
    /// How long one request may take before it fails as a timeout.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Load: print the report as one JSON object, the last line of stdout (the
    /// readable summary goes to stderr).
    #[arg(long, requires = "limit")]
    json: bool,
}

impl Cli {
    /// A ping stamped per request unless another event was asked for.
    fn payload(&self) -> Payload {
        match (self.kind.as_deref(), &self.data) {
            (None | Some(PING_REQUEST), None) => Payload::Ping,
            (kind, data) => Payload::event(
                kind.unwrap_or(PING_REQUEST),
                data.as_ref().unwrap_or(&json!({})),
            ),
        }
    }
}

fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("req: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let base = env_or("PUBLIC_WEB_URL", DEFAULT_PUBLIC_WEB_URL);
    let url = req::target_url(&base, &cli.path)
        .with_context(|| format!("PUBLIC_WEB_URL={base:?} with path {:?}", cli.path))?;
    let payload = cli.payload();
    match Limit::new(cli.requests.map(NonZeroU64::get), cli.duration) {
        Some(limit) => load(&cli, url, payload, limit).await,
        None => once(url, payload, cli.timeout).await,
    }
}

/// One request: the answer on stdout, or what went wrong on stderr.
async fn once(url: Url, payload: Payload, timeout: Duration) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let answer = match single::send(&client, url.clone(), payload.body()).await {
        Ok(answer) => answer,
        Err(error) => {
            eprintln!("req: {}", single::describe_failure(&url, &error));
            return Ok(ExitCode::FAILURE);
        }
    };
    if !answer.status.is_success() {
        eprintln!("HTTP {}", answer.status);
        eprintln!("{}", answer.pretty_body());
        if let Some(trace_id) = &answer.trace_id {
            eprint!("{}", trace_lines(trace_id));
        }
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", answer.pretty_body());
    if let Some(delay) = answer.listener_delay_ms() {
        println!("listener received it {delay:+} ms after sentAt");
    }
    println!(
        "round trip: {:.1} ms",
        answer.round_trip.as_secs_f64() * 1000.0
    );
    if let Some(trace_id) = &answer.trace_id {
        print!("{}", trace_lines(trace_id));
    }
    Ok(ExitCode::SUCCESS)
}

/// The trace id and the Grafana link that opens it.
fn trace_lines(trace_id: &str) -> String {
    let grafana = env_or("GRAFANA_URL", DEFAULT_GRAFANA_URL);
    match grafana::explore_url(&grafana, trace_id) {
        Ok(link) => format!("trace id: {trace_id}\ngrafana: {link}\n"),
        Err(error) => {
            format!("trace id: {trace_id}\n(no Grafana link: GRAFANA_URL={grafana:?}: {error})\n")
        }
    }
}

/// A load run: progress on stderr, then the summary (and JSON report).
async fn load(cli: &Cli, url: Url, payload: Payload, limit: Limit) -> anyhow::Result<ExitCode> {
    let concurrency = cli.concurrency.unwrap_or(NonZeroUsize::MIN);
    eprintln!(
        "req: POST {url} with {concurrency} in flight, {}",
        describe_limit(limit)
    );
    let report = req::run_load(LoadConfig {
        url: url.clone(),
        payload,
        concurrency,
        limit,
        timeout: cli.timeout,
        show_progress: std::io::stderr().is_terminal(),
        rate: cli.rate,
    })
    .await
    .context("could not start the load run")?;
    let summary = summary(&report);
    if cli.json {
        eprint!("{summary}");
        println!("{}", report.to_json_line());
    } else {
        print!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_limit(limit: Limit) -> String {
    match limit {
        Limit::Requests(requests) => format!("{requests} requests"),
        Limit::Duration(duration) => format!("for {}", humantime::format_duration(duration)),
        Limit::RequestsWithin(requests, duration) => format!(
            "{requests} requests or {}, whichever comes first",
            humantime::format_duration(duration)
        ),
    }
}

/// The report for people.
fn summary(report: &LoadReport) -> String {
    let mut lines = vec![
        format!(
            "{} requests in {:.2} s: {:.1} req/s (concurrency {})",
            report.requests, report.duration_s, report.rps, report.concurrency
        ),
        format!(
            "latency  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms
        ),
    ];
    if report.errors == 0 {
        lines.push("errors   none".to_owned());
    } else {
        let kinds: Vec<String> = report
            .errors_by_kind
            .iter()
            .map(|(kind, count)| format!("{kind} ×{count}"))
            .collect();
        lines.push(format!("errors   {}: {}", report.errors, kinds.join(", ")));
    }
    if report.errors_by_kind.contains_key("connect") {
        lines.push(
            "         (connect errors: is the platform running? Start it with bin/restart.sh)"
                .to_owned(),
        );
    }
    if report.abandoned > 0 {
        lines.push(format!(
            "dropped  {} in flight at the deadline (not counted)",
            report.abandoned
        ));
    }
    lines.join("\n") + "\n"
}

/// An environment variable, or `default` when unset or empty.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("req").chain(args.iter().copied()))
    }

    fn body(cli: &Cli) -> Value {
        serde_json::from_slice(&cli.payload().body()).unwrap()
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_is_one_ping() {
        let cli = parse(&[]).unwrap();
        assert!(matches!(cli.payload(), Payload::Ping));
        assert_eq!(
            Limit::new(cli.requests.map(NonZeroU64::get), cli.duration),
            None
        );
        assert_eq!(cli.path, "/");
    }

    #[test]
    fn type_and_data_make_a_fixed_event() {
        let cli = parse(&["--type", "NthPrimeRequest", "--data", r#"{"n":1001}"#]).unwrap();
        assert_eq!(
            body(&cli),
            json!({"type": "NthPrimeRequest", "data": {"n": 1001}})
        );
        let cli = parse(&["--type", "Other"]).unwrap();
        assert_eq!(body(&cli), json!({"type": "Other", "data": {}}));
    }

    #[test]
    fn data_needs_a_type_and_valid_json() {
        assert!(parse(&["--data", "{}"]).is_err());
        assert!(parse(&["--type", "X", "--data", "{not json"]).is_err());
    }

    #[test]
    fn load_flags_need_a_limit() {
        assert!(parse(&["--concurrency", "4"]).is_err());
        assert!(parse(&["--json"]).is_err());
        assert!(parse(&["--concurrency", "0", "--requests", "1"]).is_err());
        let cli = parse(&["--concurrency", "4", "--duration", "1m30s", "--json"]).unwrap();
        assert_eq!(
            Limit::new(cli.requests.map(NonZeroU64::get), cli.duration),
            Some(Limit::Duration(Duration::from_secs(90)))
        );
        let cli = parse(&["--requests", "10"]).unwrap();
        assert_eq!(cli.concurrency, None, "defaults to one worker in load()");
    }
}
