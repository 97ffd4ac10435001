//! `req`: send one event to public-web and show what came back, or load it
//! with `--concurrency N --requests M | --duration D` and report throughput,
//! latency percentiles and errors; over HTTP or (`--ws`) its WebSocket.
//! `--async` asks for the answer on the event stream instead; `--watch`
//! prints the event stream live; `--webhook-listen` receives and verifies
//! webhooks; `--mint-token` makes a development subscriber token.

use std::io::IsTerminal;
use std::num::{NonZeroU64, NonZeroUsize};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Parser};
use req::payload::PING_REQUEST;
use req::{Limit, LoadConfig, LoadReport, Payload, Transport, grafana, single, token, watch, ws};
use reqwest::Url;
use serde_json::{Value, json};

const DEFAULT_PUBLIC_WEB_URL: &str = "http://127.0.0.1:3000";
const DEFAULT_GRAFANA_URL: &str = "http://127.0.0.1:3300";

/// Send events to public-web ($PUBLIC_WEB_URL, default http://127.0.0.1:3000).
///
/// Without flags: one PingRequest, its response, the listener's delay, the
/// round trip and, when traced, a Grafana link to the trace ($GRAFANA_URL,
/// default http://127.0.0.1:3300). With --requests or --duration: a
/// closed-loop load run. --ws sends over the WebSocket instead of POST;
/// --async answers 202 and sends the answer to the event stream (and
/// webhooks); --watch prints live events; --webhook-listen receives
/// webhooks; --mint-token prints a development token.
#[derive(Debug, Parser)]
#[command(name = "req", version)]
#[command(group(ArgGroup::new("limit").multiple(true).args(["requests", "duration"])))]
struct Cli {
    /// Send over public-web's WebSocket (GET /ws) instead of POST: one
    /// frame, or with load flags a socket per worker.
    #[arg(long, conflicts_with_all = ["path", "watch", "mint_token"])]
    ws: bool,
    /// Ask for an asynchronous answer (Prefer: respond-async): public-web
    /// answers 202 with the id, and the answer goes to the event stream,
    /// to webhooks and --watch.
    #[arg(long = "async", conflicts_with_all = ["ws", "watch", "mint_token"])]
    respond_async: bool,
    /// Receive webhooks on 127.0.0.1:PORT: verify each delivery's
    /// signature with --secret and print it as a JSON line, until
    /// interrupted.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["limit", "kind", "ws", "watch", "mint_token", "respond_async"])]
    webhook_listen: Option<u16>,
    /// With --webhook-listen: the endpoint's secret (whsec_...), else
    /// $WEBHOOK_SECRET.
    #[arg(long, requires = "webhook_listen")]
    secret: Option<String>,
    /// Print each event of the stream matching FILTERS (a JSON list, or
    /// one filter object) as a JSON line {"offset", "event"}, until
    /// interrupted. Subscribes with --token, else $SUBSCRIBE_TOKEN, else a
    /// token minted from $SUBSCRIBE_JWT_HS256_KEY, else anonymously.
    #[arg(long, value_name = "FILTERS", conflicts_with_all = ["limit", "kind", "mint_token"])]
    watch: Option<String>,
    /// With --watch: replay from this stream offset first.
    #[arg(long, value_name = "OFFSET", requires = "watch")]
    from: Option<u64>,
    /// With --watch: stop after this many events.
    #[arg(long, value_name = "N", requires = "watch")]
    events: Option<u64>,
    /// With --watch: the bearer token to subscribe with.
    #[arg(long, requires = "watch")]
    token: Option<String>,
    /// Print a development subscriber token signed with
    /// $SUBSCRIBE_JWT_HS256_KEY (what public-web verifies) and exit.
    #[arg(long, conflicts_with_all = ["limit", "kind"])]
    mint_token: bool,
    /// With --mint-token: how long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// With --mint-token: the event types it allows, comma-separated (each
    /// exact, or a prefix ending in *); every type when not given.
    #[arg(
        long,
        value_name = "TYPES",
        value_delimiter = ',',
        requires = "mint_token"
    )]
    token_types: Option<Vec<String>>,
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
    if cli.mint_token {
        return mint_token(&cli);
    }
    if let Some(port) = cli.webhook_listen {
        return listen(&cli, port).await;
    }
    let base = env_or("PUBLIC_WEB_URL", DEFAULT_PUBLIC_WEB_URL);
    let url = req::target_url(&base, &cli.path)
        .with_context(|| format!("PUBLIC_WEB_URL={base:?} with path {:?}", cli.path))?;
    if let Some(filters) = &cli.watch {
        return watch_events(&cli, &url, filters).await;
    }
    let (url, transport) = match (cli.ws, cli.respond_async) {
        (true, _) => (
            ws::ws_url(&url).with_context(|| format!("PUBLIC_WEB_URL={base:?}"))?,
            Transport::WebSocket,
        ),
        (false, true) => (url, Transport::HttpAsync),
        (false, false) => (url, Transport::Http),
    };
    let payload = cli.payload();
    match Limit::new(cli.requests.map(NonZeroU64::get), cli.duration) {
        Some(limit) => load(&cli, url, transport, payload, limit).await,
        None => once(url, transport, payload, cli.timeout).await,
    }
}

/// `--mint-token`: the token on stdout.
fn mint_token(cli: &Cli) -> anyhow::Result<ExitCode> {
    let Some(minted) = token::mint_from_env(cli.token_ttl, cli.token_types.clone()) else {
        anyhow::bail!(
            "{} is not set: it must hold the HS256 key public-web verifies tokens with \
             (bin/req reads bin/restart.sh's out/subscribe-key)",
            token::KEY_VAR
        );
    };
    println!("{}", minted.context("signing the token")?);
    Ok(ExitCode::SUCCESS)
}

/// `--webhook-listen`: deliveries on stdout until interrupted.
async fn listen(cli: &Cli, port: u16) -> anyhow::Result<ExitCode> {
    let verifier = match cli
        .secret
        .clone()
        .or_else(|| non_empty_env("WEBHOOK_SECRET"))
    {
        Some(secret) => {
            let secret = secret
                .parse::<common::webhook::Secret>()
                .context("--secret / WEBHOOK_SECRET")?;
            Some(common::webhook::Verifier::new(vec![secret]))
        }
        None => {
            eprintln!("req: no --secret or WEBHOOK_SECRET: deliveries are printed unverified");
            None
        }
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    req::listen::serve(port, verifier, shutdown)
        .await
        .with_context(|| format!("receiving on 127.0.0.1:{port}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `--watch`: events on stdout until interrupted or `--events` are printed.
async fn watch_events(cli: &Cli, base: &Url, filters: &str) -> anyhow::Result<ExitCode> {
    let filters = watch::parse_filters(filters)?;
    let token = match cli
        .token
        .clone()
        .or_else(|| non_empty_env("SUBSCRIBE_TOKEN"))
    {
        Some(token) => Some(token),
        None => token::mint_from_env(Duration::from_secs(24 * 3600), None)
            .transpose()
            .context("minting a development token")?,
    };
    let url = ws::ws_url(base)?;
    let socket = ws::Socket::connect(&url, token.as_deref())
        .await
        .with_context(|| format!("subscribing at {url}"))?;
    eprintln!("req: watching {url} for {filters}");
    let mut stdout = std::io::stdout().lock();
    tokio::select! {
        watched = watch::watch(socket, &filters, cli.from, cli.events, &mut stdout) => {
            watched?;
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// One request: the answer on stdout, or what went wrong on stderr.
async fn once(
    url: Url,
    transport: Transport,
    payload: Payload,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let sent = match transport {
        Transport::Http | Transport::HttpAsync => {
            let client = reqwest::Client::builder().timeout(timeout).build()?;
            let respond_async = transport == Transport::HttpAsync;
            single::send(&client, url.clone(), payload.body(), respond_async)
                .await
                .map_err(|error| single::describe_failure(&url, &error))
        }
        Transport::WebSocket => single::send_ws(&url, payload.body(), timeout)
            .await
            .map_err(|error| format!("{url}: {error}")),
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(failure) => {
            eprintln!("req: {failure}");
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
    if transport == Transport::HttpAsync {
        println!(
            "accepted ({}): the answer goes to the event stream (webhooks, bin/req --watch)",
            answer.status
        );
    }
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
async fn load(
    cli: &Cli,
    url: Url,
    transport: Transport,
    payload: Payload,
    limit: Limit,
) -> anyhow::Result<ExitCode> {
    let concurrency = cli.concurrency.unwrap_or(NonZeroUsize::MIN);
    let how = match transport {
        Transport::Http => "POST",
        Transport::HttpAsync => "POST (respond-async)",
        Transport::WebSocket => "WebSocket",
    };
    eprintln!(
        "req: {how} {url} with {concurrency} in flight, {}",
        describe_limit(limit)
    );
    let report = req::run_load(LoadConfig {
        url: url.clone(),
        transport,
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
    non_empty_env(name).unwrap_or_else(|| default.to_owned())
}

/// An environment variable when set and not empty.
fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
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
    fn ws_watch_and_mint_token_exclude_each_other() {
        assert!(parse(&["--ws"]).unwrap().ws);
        assert!(parse(&["--ws", "--concurrency", "8", "--duration", "5s"]).is_ok());
        assert!(parse(&["--ws", "--path", "/ping"]).is_err());
        assert!(parse(&["--ws", "--watch", "[]"]).is_err());
        assert!(parse(&["--watch", "[]", "--requests", "3"]).is_err());
        assert!(parse(&["--from", "3"]).is_err(), "--from needs --watch");
        let cli = parse(&["--watch", "[]", "--from", "3", "--events", "2"]).unwrap();
        assert_eq!((cli.from, cli.events), (Some(3), Some(2)));
        assert!(parse(&["--token-types", "A"]).is_err());
        let cli = parse(&["--mint-token", "--token-types", "A,B*", "--token-ttl", "5m"]).unwrap();
        assert_eq!(cli.token_types, Some(vec!["A".to_owned(), "B*".to_owned()]));
        assert_eq!(cli.token_ttl, Duration::from_secs(300));
    }

    #[test]
    fn async_and_webhook_listen_take_their_own_flags() {
        assert!(parse(&["--async"]).unwrap().respond_async);
        assert!(parse(&["--async", "--concurrency", "4", "--requests", "9"]).is_ok());
        assert!(parse(&["--async", "--ws"]).is_err());
        let cli = parse(&["--webhook-listen", "4000", "--secret", "whsec_AAAA"]).unwrap();
        assert_eq!(cli.webhook_listen, Some(4000));
        assert!(
            parse(&["--secret", "whsec_AAAA"]).is_err(),
            "--secret needs --webhook-listen"
        );
        assert!(parse(&["--webhook-listen", "4000", "--requests", "3"]).is_err());
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
