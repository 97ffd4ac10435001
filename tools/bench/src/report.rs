//! The results of one bin/bench run, rendered: the table of throughput and
//! latency with every row as a ratio to the AMQP floor at the same
//! concurrency, the memory figures, and the issue's targets judged against
//! them. The same Markdown goes to the terminal and into BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

/// Scenario names as bin/bench writes them, in table order.
pub const FLOOR: &str = "floor";
pub const FULL: &str = "full";
pub const FULL_TRACED: &str = "full-traced";
pub const WS: &str = "ws";
pub const PING: &str = "ping";
const SCENARIOS: [&str; 5] = [FLOOR, FULL, WS, FULL_TRACED, PING];
/// The floor study's points are `floor:<variant>` (`bin/bench
/// --floor-study`); the first variant is the one the others are compared
/// with.
pub const FLOOR_VARIANT: &str = "floor:";

fn label(scenario: &str) -> &str {
    match scenario {
        FLOOR => "raw AMQP floor",
        FULL => "full path, tracing off",
        FULL_TRACED => "full path, tracing on",
        WS => "full path over WebSocket, tracing off",
        PING => "public-web /ping",
        other => other,
    }
}

/// The numbers of one run that the report uses (a subset of `req --json`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Numbers {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
    /// Wall-clock length of the run.
    #[serde(default)]
    pub duration_s: f64,
}

/// One measured point: a scenario at a concurrency.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Point {
    pub scenario: String,
    pub concurrency: usize,
    /// Other builds seen running while it was measured (`pgrep rustc`).
    #[serde(default)]
    pub busy: u32,
    /// CPU time each process spent during the point, in milliseconds:
    /// the services, `broker`, `client` (the load generator; for the
    /// floor, both of its sides), tracing on `otlp-sink`, and `other`:
    /// everything else the machine ran meanwhile.
    #[serde(default)]
    pub cpu_ms: BTreeMap<String, f64>,
    pub report: Numbers,
    /// When several rounds were merged into this point: the lowest and
    /// highest req/s among them.
    #[serde(skip)]
    pub rps_range: Option<(f64, f64)>,
}

/// Merges the rounds of each scenario and concurrency (`bin/bench
/// --rounds`) into one point: the median req/s, p50 and p99 (each on its
/// own), errors, requests, durations and CPU summed (so CPU per request is
/// over all rounds), the most builds seen. Order of first appearance is
/// kept.
pub fn merge_rounds(points: Vec<Point>) -> Vec<Point> {
    let mut groups: Vec<Vec<Point>> = Vec::new();
    for point in points {
        match groups.iter_mut().find(|group| {
            group[0].scenario == point.scenario && group[0].concurrency == point.concurrency
        }) {
            Some(group) => group.push(point),
            None => groups.push(vec![point]),
        }
    }
    groups
        .into_iter()
        .map(|mut group| {
            if group.len() == 1 {
                return group.remove(0);
            }
            let median = |value: fn(&Numbers) -> f64| {
                let mut values: Vec<f64> = group.iter().map(|p| value(&p.report)).collect();
                values.sort_by(f64::total_cmp);
                let middle = values.len() / 2;
                if values.len().is_multiple_of(2) {
                    (values[middle - 1] + values[middle]) / 2.0
                } else {
                    values[middle]
                }
            };
            let rps: Vec<f64> = group.iter().map(|p| p.report.rps).collect();
            let low = rps.iter().copied().fold(f64::INFINITY, f64::min);
            let high = rps.iter().copied().fold(0.0, f64::max);
            let mut cpu_ms = BTreeMap::<String, f64>::new();
            for point in &group {
                for (process, ms) in &point.cpu_ms {
                    *cpu_ms.entry(process.clone()).or_default() += ms;
                }
            }
            Point {
                scenario: group[0].scenario.clone(),
                concurrency: group[0].concurrency,
                busy: group.iter().map(|p| p.busy).max().unwrap_or(0),
                cpu_ms,
                report: Numbers {
                    rps: median(|n| n.rps),
                    p50_ms: median(|n| n.p50_ms),
                    p99_ms: median(|n| n.p99_ms),
                    requests: group.iter().map(|p| p.report.requests).sum(),
                    errors: group.iter().map(|p| p.report.errors).sum(),
                    duration_s: group.iter().map(|p| p.report.duration_s).sum(),
                },
                rps_range: Some((low, high)),
            }
        })
        .collect()
}

/// Idle resident memory of one service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IdleRss {
    pub service: String,
    /// Which stack it belongs to: `off` or `traced`.
    pub stack: String,
    pub rss_kib: u64,
}

/// What parked-rss printed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Parked {
    /// `http1` (a connection per request) or `h2c` (streams sharing
    /// connections); runs from before h2c have none and were HTTP/1.1.
    #[serde(default = "http1")]
    pub protocol: String,
    /// Client connections that carried the parked requests.
    #[serde(default)]
    pub connections: usize,
    pub requests: usize,
    pub parked: usize,
    pub rss_before_kib: u64,
    pub rss_parked_kib: u64,
    pub extra_kib: u64,
    pub extra_bytes_per_request: u64,
    pub rss_after_hangup_kib: u64,
    pub parked_s: f64,
    /// Least-squares bytes per parked request over the run.
    pub slope_bytes_per_request: f64,
    /// The count the budget is for, and the extra RSS estimated there
    /// (measured when `parked` reached it, else extrapolated by the slope).
    pub target: usize,
    pub extra_at_target_kib: f64,
}

/// What ws-idle-rss printed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IdleSockets {
    pub sockets: usize,
    pub subscribed: usize,
    pub rss_before_kib: u64,
    pub rss_subscribed_kib: u64,
    pub extra_kib: u64,
    pub extra_bytes_per_socket: u64,
    pub rss_after_hangup_kib: u64,
    pub open_s: f64,
}

/// What webhook-bench printed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Webhooks {
    pub requests: usize,
    pub concurrency: usize,
    pub delivered: usize,
    pub delivered_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers sent one at a time after the burst, and their latency.
    #[serde(default)]
    pub idle_requests: usize,
    #[serde(default)]
    pub idle_p50_ms: f64,
    #[serde(default)]
    pub idle_p99_ms: f64,
}

fn http1() -> String {
    "http1".to_owned()
}

/// Everything one run produced.
#[derive(Debug, Default)]
pub struct Results {
    pub points: Vec<Point>,
    pub idle: Vec<IdleRss>,
    /// One per protocol parked-rss was run with.
    pub parked: Vec<Parked>,
    /// parked-rss against bench's bare-h2-server, one per protocol: what
    /// hyper alone spends per parked request, the floor under public-web's
    /// figure for the same protocol.
    pub parked_floor: Vec<Parked>,
    /// ws-idle-rss: idle subscribed WebSockets on public-web.
    pub idle_sockets: Option<IdleSockets>,
    /// webhook-bench: answers delivered to a local endpoint.
    pub webhooks: Option<Webhooks>,
}

/// Parses JSON lines, skipping blank ones; errors name the line.
pub fn parse_lines<T: for<'de> Deserialize<'de>>(text: &str) -> Result<Vec<T>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|error| format!("line {}: {error}", index + 1))
        })
        .collect()
}

/// Points whose run had errors, or that answered nothing.
pub fn failures(points: &[Point]) -> Vec<String> {
    points
        .iter()
        .filter(|point| point.report.errors > 0 || point.report.requests == 0)
        .map(|point| {
            format!(
                "{} at concurrency {}: {} errors in {} requests",
                label(&point.scenario),
                point.concurrency,
                point.report.errors,
                point.report.requests
            )
        })
        .collect()
}

/// A failure when tracing-on points ran but the sink's counts (`/stats`,
/// when read) show no span arrived: the traced rows would then measure a
/// stack that exports nothing.
pub fn export_failure(points: &[Point], sink: &BTreeMap<String, u64>) -> Option<String> {
    let traced = points.iter().any(|point| point.scenario == FULL_TRACED);
    let spans = sink.get("spans").copied();
    (traced && spans == Some(0))
        .then(|| "tracing on, yet the OTLP sink received no span".to_owned())
}

/// The idle RSS budget of each service, in MiB.
pub const IDLE_BUDGET_MIB: f64 = 20.0;

/// The parked-memory targets: per protocol, the most bytes public-web may
/// spend per parked request above what hyper alone spends for the same
/// client (bench's bare-h2-server), and the target as the table states it.
/// HTTP/1.1's was first set at 8 KB in all, but hyper alone allocates a read
/// and a write buffer of 8 KiB each per connection up front: above its
/// floor is the part public-web can change.
const PARKED_ABOVE_FLOOR: [(&str, u64, &str); 2] = [
    (
        "h2c",
        512,
        "a parked request over HTTP/2 cleartext: public-web's own ≤ 512 B above hyper alone",
    ),
    (
        "http1",
        8 * 1024,
        "a parked request over HTTP/1.1 (a connection each): public-web's own ≤ 8 KB above hyper alone",
    ),
];

impl Results {
    fn point(&self, scenario: &str, concurrency: usize) -> Option<&Numbers> {
        self.points
            .iter()
            .find(|point| point.scenario == scenario && point.concurrency == concurrency)
            .map(|point| &point.report)
    }

    /// Points whose run had errors, or that answered nothing.
    pub fn failures(&self) -> Vec<String> {
        failures(&self.points)
    }

    /// The main table, as Markdown.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | conc. | req/s | p50 ms | p99 ms | req/s ÷ floor | p50 ÷ floor | p99 ÷ floor | errors | builds running | other load |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let mut concurrencies: Vec<usize> = self.points.iter().map(|p| p.concurrency).collect();
        concurrencies.sort_unstable();
        concurrencies.dedup();
        for concurrency in concurrencies {
            let floor = self.point(FLOOR, concurrency);
            for scenario in SCENARIOS {
                let Some(point) = self
                    .points
                    .iter()
                    .find(|p| p.scenario == scenario && p.concurrency == concurrency)
                else {
                    continue;
                };
                let numbers = &point.report;
                let ratio = |value: f64, base: Option<f64>| match base {
                    Some(base) if base > 0.0 => format!("{:.2}", value / base),
                    _ => "–".to_owned(),
                };
                let other = point.cpu_ms.get("other").map_or_else(
                    || "–".to_owned(),
                    |ms| format!("{:.0} %", ms / 10.0 / numbers.duration_s.max(0.001)),
                );
                let rps = match point.rps_range {
                    Some((low, high)) => format!("{:.0} ({low:.0}–{high:.0})", numbers.rps),
                    None => format!("{:.0}", numbers.rps),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} |",
                    label(scenario),
                    concurrency,
                    rps,
                    numbers.p50_ms,
                    numbers.p99_ms,
                    ratio(numbers.rps, floor.map(|f| f.rps)),
                    ratio(numbers.p50_ms, floor.map(|f| f.p50_ms)),
                    ratio(numbers.p99_ms, floor.map(|f| f.p99_ms)),
                    numbers.errors,
                    point.busy,
                    other,
                );
            }
        }
        out
    }

    /// The floor study, as Markdown: each variant of the AMQP floor at each
    /// concurrency, its throughput and the CPU the broker and the client
    /// spent per round trip, and how each differs from the first variant.
    pub fn floor_study(&self) -> String {
        let mut out = String::from(
            "| variant | conc. | req/s | p50 ms | p99 ms | broker µs/rt | client µs/rt | req/s vs first | broker µs vs first |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let per_round_trip = |point: &Point, process: &str| {
            point
                .cpu_ms
                .get(process)
                .map(|ms| ms * 1000.0 / point.report.requests.max(1) as f64)
        };
        let mut concurrencies: Vec<usize> = self.points.iter().map(|p| p.concurrency).collect();
        concurrencies.sort_unstable();
        concurrencies.dedup();
        for concurrency in concurrencies {
            let variants: Vec<&Point> = self
                .points
                .iter()
                .filter(|p| p.concurrency == concurrency && p.scenario.starts_with(FLOOR_VARIANT))
                .collect();
            let Some(first) = variants.first() else {
                continue;
            };
            let first_broker = per_round_trip(first, "broker");
            for point in &variants {
                let numbers = &point.report;
                let rps = match point.rps_range {
                    Some((low, high)) => format!("{:.0} ({low:.0}–{high:.0})", numbers.rps),
                    None => format!("{:.0}", numbers.rps),
                };
                let micros =
                    |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v:.0}"));
                let broker = per_round_trip(point, "broker");
                let broker_change = match (broker, first_broker) {
                    (Some(broker), Some(first)) => format!("{:+.0}", broker - first),
                    _ => "–".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.3} | {:.3} | {} | {} | {:+.0} % | {} |",
                    &point.scenario[FLOOR_VARIANT.len()..],
                    concurrency,
                    rps,
                    numbers.p50_ms,
                    numbers.p99_ms,
                    micros(broker),
                    micros(per_round_trip(point, "client")),
                    (numbers.rps / first.report.rps.max(f64::MIN_POSITIVE) - 1.0) * 100.0,
                    broker_change,
                );
            }
        }
        out
    }

    /// CPU microseconds each process spent per request, as Markdown: where
    /// the cores went.
    pub fn cpu(&self) -> String {
        const COLUMNS: [&str; 6] = [
            "public-web",
            "dispatcher",
            "ping-listener",
            "broker",
            "client",
            "otlp-sink",
        ];
        let mut out = String::from(
            "| scenario | conc. | public-web | dispatcher | ping-listener | broker | client | OTLP sink | total |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for point in self.points.iter().filter(|p| !p.cpu_ms.is_empty()) {
            let requests = point.report.requests.max(1) as f64;
            let per_request = |ms: f64| ms * 1000.0 / requests;
            let cells: Vec<String> = COLUMNS
                .iter()
                .map(|column| match point.cpu_ms.get(*column) {
                    Some(ms) => format!("{:.0}", per_request(*ms)),
                    None => "–".to_owned(),
                })
                .collect();
            let total: f64 = COLUMNS
                .iter()
                .filter_map(|column| point.cpu_ms.get(*column))
                .sum();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} |",
                label(&point.scenario),
                point.concurrency,
                cells.join(" | "),
                per_request(total)
            );
        }
        out
    }

    /// The memory figures, as Markdown.
    pub fn memory(&self) -> String {
        let mut out = String::new();
        if !self.idle.is_empty() {
            out.push_str("| service | stack | idle RSS MiB |\n|---|---|--:|\n");
            for idle in &self.idle {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} |",
                    idle.service,
                    if idle.stack == "traced" {
                        "tracing on"
                    } else {
                        "tracing off"
                    },
                    mib(idle.rss_kib)
                );
            }
        }
        for parked in &self.parked {
            let _ = write!(
                out,
                "\nParked requests over {}: {} of {} parked on {} connections in {:.1} s; public-web RSS {:.1} → {:.1} MiB, \
                 **+{:.1} MiB** ({} bytes per parked request); {:.1} MiB after the clients hung up.\n",
                protocol_name(&parked.protocol),
                parked.parked,
                parked.requests,
                parked.connections,
                parked.parked_s,
                mib(parked.rss_before_kib),
                mib(parked.rss_parked_kib),
                mib(parked.extra_kib),
                parked.extra_bytes_per_request,
                mib(parked.rss_after_hangup_kib),
            );
            if parked.parked < parked.target {
                let _ = writeln!(
                    out,
                    "Growth over the run: {:.0} bytes per parked request; extrapolated to {}: \
                     **+{:.1} MiB**.",
                    parked.slope_bytes_per_request,
                    parked.target,
                    parked.extra_at_target_kib / 1024.0,
                );
            }
        }
        if let Some(idle) = &self.idle_sockets {
            let _ = writeln!(
                out,
                "\nIdle WebSocket subscribers: {} sockets, {} subscribed (one subscription each, a filter \
                 nothing matches), opened in {:.1} s; public-web RSS {:.1} → {:.1} MiB, **+{:.1} MiB** \
                 ({} bytes per socket); {:.1} MiB after the clients hung up.",
                idle.sockets,
                idle.subscribed,
                idle.open_s,
                mib(idle.rss_before_kib),
                mib(idle.rss_subscribed_kib),
                mib(idle.extra_kib),
                idle.extra_bytes_per_socket,
                mib(idle.rss_after_hangup_kib),
            );
        }
        for floor in &self.parked_floor {
            let _ = writeln!(
                out,
                "\nhyper's own floor over {} (bench's bare-h2-server: hyper alone, a response \
                 that never comes, the same client): {} of {} parked on {} connections, \
                 **+{:.1} MiB** ({} bytes per parked request).",
                protocol_name(&floor.protocol),
                floor.parked,
                floor.requests,
                floor.connections,
                mib(floor.extra_kib),
                floor.extra_bytes_per_request,
            );
        }
        out
    }

    /// The webhook figures, as Markdown (empty when not measured).
    pub fn webhooks(&self) -> String {
        let Some(run) = &self.webhooks else {
            return String::new();
        };
        format!(
            "{} answers of asynchronous pings sent in a burst ({} in flight) delivered to an \
             endpoint on this machine: **{:.1} deliveries/s**; from the `202` to the delivery \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (time in the queue, mostly). {} more sent \
             one at a time, each after the last was delivered: p50 **{:.1} ms**, p99 \
             **{:.1} ms**.\n",
            run.delivered,
            run.concurrency,
            run.delivered_per_s,
            run.p50_ms,
            run.p99_ms,
            run.max_ms,
            run.idle_requests,
            run.idle_p50_ms,
            run.idle_p99_ms
        )
    }

    /// The targets of the performance issue, each judged when measured.
    pub fn targets(&self) -> String {
        let mut out = String::from("| target | measured | met |\n|---|---|---|\n");
        let mut row = |target: &str, measured: Option<(String, bool)>| {
            let (text, met) = match measured {
                Some((text, true)) => (text, "yes"),
                Some((text, false)) => (text, "**no**"),
                None => ("not measured".to_owned(), "–"),
            };
            let _ = writeln!(out, "| {target} | {text} | {met} |");
        };
        row(
            "full path (tracing off) at c=64 ≥ 50 % of the floor's req/s",
            self.point(FULL, 64)
                .zip(self.point(FLOOR, 64))
                .map(|(full, floor)| {
                    let share = full.rps / floor.rps;
                    (
                        format!(
                            "{:.0} / {:.0} = {:.0} %",
                            full.rps,
                            floor.rps,
                            share * 100.0
                        ),
                        share >= 0.5,
                    )
                }),
        );
        row(
            "tracing on (spans and logs) costs ≤ 10 % of the req/s at c=64",
            self.point(FULL_TRACED, 64)
                .zip(self.point(FULL, 64))
                .map(|(traced, off)| {
                    let cost = 1.0 - traced.rps / off.rps;
                    (
                        format!("{:.0} vs {:.0}: {:.0} %", traced.rps, off.rps, cost * 100.0),
                        cost <= 0.10,
                    )
                }),
        );
        row(
            "WebSocket request/reply at c=64 ≥ POST /'s req/s",
            self.point(WS, 64)
                .zip(self.point(FULL, 64))
                .map(|(ws, post)| {
                    (
                        format!(
                            "{:.0} vs {:.0} ({:+.0} %)",
                            ws.rps,
                            post.rps,
                            (ws.rps / post.rps - 1.0) * 100.0
                        ),
                        ws.rps >= post.rps,
                    )
                }),
        );
        for (scenario, name) in [(FULL, "tracing off"), (FULL_TRACED, "tracing on")] {
            row(
                &format!("p99 at c=16 ≤ 3× the floor's ({name})"),
                self.point(scenario, 16)
                    .zip(self.point(FLOOR, 16))
                    .map(|(full, floor)| {
                        let ratio = full.p99_ms / floor.p99_ms;
                        (
                            format!(
                                "{:.2} / {:.2} ms = {:.1}×",
                                full.p99_ms, floor.p99_ms, ratio
                            ),
                            ratio <= 3.0,
                        )
                    }),
            );
        }
        for (protocol, budget, target) in PARKED_ABOVE_FLOOR {
            let measured = self
                .parked
                .iter()
                .find(|parked| parked.protocol == protocol)
                .map(|parked| {
                    let floor = self
                        .parked_floor
                        .iter()
                        .find(|floor| floor.protocol == protocol);
                    match floor {
                        Some(floor) => {
                            let above = parked.extra_bytes_per_request as i64
                                - floor.extra_bytes_per_request as i64;
                            (
                                format!(
                                    "{above} B: public-web {} B, hyper alone {} B, per request \
                                     ({} parked)",
                                    parked.extra_bytes_per_request,
                                    floor.extra_bytes_per_request,
                                    parked.parked
                                ),
                                above <= budget as i64,
                            )
                        }
                        None => (
                            format!(
                                "public-web {} B per request; hyper alone not measured",
                                parked.extra_bytes_per_request
                            ),
                            false,
                        ),
                    }
                });
            row(target, measured);
        }
        let worst = self.idle.iter().max_by_key(|idle| idle.rss_kib);
        row(
            "idle RSS of each service < 20 MiB",
            worst.map(|worst| {
                (
                    format!(
                        "largest: {} ({}) {:.1} MiB",
                        worst.service,
                        worst.stack,
                        mib(worst.rss_kib)
                    ),
                    mib(worst.rss_kib) < IDLE_BUDGET_MIB,
                )
            }),
        );
        out
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How a parked-rss run reached public-web, in words.
fn protocol_name(protocol: &str) -> &str {
    match protocol {
        "http1" => "HTTP/1.1, a connection each",
        "h2c" => "HTTP/2 cleartext, streams sharing connections",
        other => other,
    }
}

/// Markers around the generated section of BENCHMARKS.md.
pub const BEGIN: &str = "<!-- bench:results:begin -->";
pub const END: &str = "<!-- bench:results:end -->";

/// `document` with the text between the markers replaced by `section`
/// (markers appended at the end when missing).
pub fn replace_section(document: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    match (document.find(BEGIN), document.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{block}{}",
            &document[..begin],
            &document[end + END.len()..]
        ),
        _ => {
            let mut out = document.trim_end().to_owned();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&block);
            out.push('\n');
            out
        }
    }
}

/// Facts about the run for the report's heading.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub date: String,
    pub command: String,
    /// The commit measured, `-dirty` when the tree had changes.
    pub tree: String,
    pub cores: String,
    pub cpu: String,
    pub rabbitmq: String,
    pub duration: String,
    pub sink: BTreeMap<String, u64>,
}

/// The whole generated section.
pub fn section(info: &RunInfo, results: &Results) -> String {
    let mut out = format!(
        "## Latest results\n\n\
         - date: {}\n- command: `{}`\n- tree: {}\n- machine: {} cores ({}), RabbitMQ {}\n- each point: {}, closed loop\n",
        info.date, info.command, info.tree, info.cores, info.cpu, info.rabbitmq, info.duration
    );
    if !info.sink.is_empty() {
        let counts: Vec<String> = info
            .sink
            .iter()
            .map(|(key, value)| format!("{value} {key}"))
            .collect();
        let _ = writeln!(
            out,
            "- the OTLP sink received {} during the tracing-on runs",
            counts.join(", ")
        );
    }
    let _ = write!(
        out,
        "\n### Throughput and latency\n\n{}\n### CPU per request (µs, all threads of each process)\n\n{}\n### Memory\n\n{}",
        results.table(),
        results.cpu(),
        results.memory(),
    );
    let webhooks = results.webhooks();
    if !webhooks.is_empty() {
        let _ = write!(out, "\n### Webhooks\n\n{webhooks}");
    }
    let _ = write!(out, "\n### Targets\n\n{}", results.targets());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(scenario: &str, concurrency: usize, rps: f64, p99_ms: f64, errors: u64) -> Point {
        Point {
            scenario: scenario.to_owned(),
            concurrency,
            busy: 0,
            cpu_ms: BTreeMap::from([
                ("broker".to_owned(), 500.0),
                ("client".to_owned(), 250.0),
                ("other".to_owned(), 1000.0),
            ]),
            report: Numbers {
                rps,
                p50_ms: p99_ms / 2.0,
                p99_ms,
                requests: 1000,
                errors,
                duration_s: 10.0,
            },
            rps_range: None,
        }
    }

    fn results() -> Results {
        Results {
            points: vec![
                point(FLOOR, 16, 10_000.0, 2.0, 0),
                point(FULL, 16, 4_000.0, 8.0, 0),
                point(FLOOR, 64, 20_000.0, 5.0, 0),
                point(FULL, 64, 12_000.0, 10.0, 0),
                point(FULL_TRACED, 64, 9_000.0, 12.0, 0),
            ],
            idle: vec![
                IdleRss {
                    service: "public-web".into(),
                    stack: "off".into(),
                    rss_kib: 10 * 1024,
                },
                IdleRss {
                    service: "dispatcher".into(),
                    stack: "off".into(),
                    rss_kib: 25 * 1024,
                },
            ],
            parked: Vec::new(),
            parked_floor: Vec::new(),
            idle_sockets: None,
            webhooks: None,
        }
    }

    #[test]
    fn floor_variants_are_compared_with_the_first() {
        let mut lean = point("floor:lean", 64, 15_000.0, 4.0, 0);
        lean.cpu_ms.insert("broker".to_owned(), 400.0);
        let results = Results {
            points: vec![point("floor:product-like", 64, 10_000.0, 5.0, 0), lean],
            ..Results::default()
        };
        let table = results.floor_study();
        assert!(
            table.contains("| product-like | 64 | 10000 | 2.500 | 5.000 | 500 | 250 | +0 % | +0 |"),
            "{table}"
        );
        assert!(
            table.contains("| lean | 64 | 15000 | 2.000 | 4.000 | 400 | 250 | +50 % | -100 |"),
            "{table}"
        );
    }

    #[test]
    fn rows_are_ratios_to_the_floor_at_the_same_concurrency() {
        let table = results().table();
        assert!(
            table.contains("| full path, tracing off | 64 | 12000 | 5.000 | 10.000 | 0.60 | 2.00 | 2.00 | 0 | 0 | 10 % |"),
            "{table}"
        );
        assert!(
            table.contains("| raw AMQP floor | 16 | 10000 | 1.000 | 2.000 | 1.00 | 1.00 | 1.00 |"),
            "{table}"
        );
    }

    #[test]
    fn cpu_is_per_request_in_microseconds() {
        let cpu = results().cpu();
        // 500 ms of broker CPU over 1000 requests: 500 µs each.
        assert!(
            cpu.contains("| raw AMQP floor | 16 | – | – | – | 500 | 250 | – | 750 |"),
            "{cpu}"
        );
    }

    #[test]
    fn targets_are_judged_from_the_points() {
        let targets = results().targets();
        assert!(targets.contains("12000 / 20000 = 60 % | yes"), "{targets}");
        assert!(
            targets.contains("9000 vs 12000: 25 % | **no**"),
            "{targets}"
        );
        assert!(
            targets.contains("8.00 / 2.00 ms = 4.0× | **no**"),
            "{targets}"
        );
        assert!(
            targets.contains("public-web's own ≤ 512 B above hyper alone | not measured"),
            "{targets}"
        );
        assert!(
            targets.contains("largest: dispatcher (off) 25.0 MiB | **no**"),
            "{targets}"
        );
    }

    #[test]
    fn websocket_rows_are_judged_against_post_and_idle_sockets_reported() {
        let mut results = results();
        assert!(
            results
                .targets()
                .contains("≥ POST /'s req/s | not measured")
        );
        results.points.push(point(WS, 64, 13_200.0, 9.0, 0));
        let targets = results.targets();
        assert!(
            targets.contains("13200 vs 12000 (+10 %) | yes"),
            "{targets}"
        );
        assert!(
            results
                .table()
                .contains("| full path over WebSocket, tracing off | 64 | 13200 |")
        );
        let idle = r#"{"sockets":10000,"subscribed":10000,"held_open":10000,"rss_before_kib":10240,"rss_subscribed_kib":71680,"extra_kib":61440,"extra_bytes_per_socket":6291,"subscriptions_after_hangup":0,"rss_after_hangup_kib":20480,"open_s":4.2}"#;
        results.idle_sockets = parse_lines(idle).unwrap().pop();
        let memory = results.memory();
        assert!(
            memory.contains("10000 sockets, 10000 subscribed")
                && memory.contains("**+60.0 MiB** (6291 bytes per socket)"),
            "{memory}"
        );
    }

    #[test]
    fn webhook_figures_have_a_section_of_their_own() {
        let mut results = results();
        assert_eq!(results.webhooks(), "");
        let line = r#"{"requests":2000,"concurrency":16,"delivered":2000,"errors":0,"sent_s":1.5,"delivered_per_s":812.3,"p50_ms":12.5,"p99_ms":48.0,"max_ms":60.1}"#;
        results.webhooks = parse_lines(line).unwrap().pop();
        let text = section(&RunInfo::default(), &results);
        assert!(text.contains("### Webhooks"), "{text}");
        assert!(text.contains("**812.3 deliveries/s**"), "{text}");
        assert!(text.contains("p99 48.0 ms"), "{text}");
    }

    #[test]
    fn parked_runs_are_judged_per_protocol_above_hyper_alone() {
        let lines = concat!(
            r#"{"protocol":"http1","connections":19000,"requests":19000,"parked":19000,"rss_before_kib":8000,"rss_parked_kib":552000,"extra_kib":544000,"extra_bytes_per_request":29318,"rss_after_hangup_kib":550000,"parked_s":36.0,"slope_bytes_per_request":29000.0,"target":100000,"extra_at_target_kib":2800000.0}"#,
            "\n",
            r#"{"protocol":"h2c","connections":500,"requests":100000,"parked":100000,"rss_before_kib":8000,"rss_parked_kib":40000,"extra_kib":32000,"extra_bytes_per_request":327,"rss_after_hangup_kib":30000,"parked_s":15.0,"slope_bytes_per_request":330.0,"target":100000,"extra_at_target_kib":32000.0}"#,
        );
        let floors = concat!(
            r#"{"protocol":"http1","connections":19000,"requests":19000,"parked":19000,"rss_before_kib":4000,"rss_parked_kib":204000,"extra_kib":200000,"extra_bytes_per_request":10798,"rss_after_hangup_kib":6000,"parked_s":20.0,"slope_bytes_per_request":10800.0,"target":100000,"extra_at_target_kib":1054000.0}"#,
            "\n",
            r#"{"protocol":"h2c","connections":500,"requests":100000,"parked":100000,"rss_before_kib":4800,"rss_parked_kib":156800,"extra_kib":152000,"extra_bytes_per_request":1556,"rss_after_hangup_kib":157000,"parked_s":10.0,"slope_bytes_per_request":1540.0,"target":100000,"extra_at_target_kib":152000.0}"#,
        );
        let mut results = results();
        results.parked = parse_lines(lines).unwrap();
        let targets = results.targets();
        assert!(
            targets.contains("| public-web 29318 B per request; hyper alone not measured | **no**"),
            "{targets}"
        );
        results.parked_floor = parse_lines(floors).unwrap();
        let targets = results.targets();
        assert!(
            targets.contains(
                "(a connection each): public-web's own ≤ 8 KB above hyper alone | 18520 B: public-web 29318 B, hyper alone 10798 B, per request (19000 parked) | **no**"
            ),
            "{targets}"
        );
        assert!(
            targets.contains(
                "public-web's own ≤ 512 B above hyper alone | -1229 B: public-web 327 B, hyper alone 1556 B, per request (100000 parked) | yes"
            ),
            "{targets}"
        );
        let memory = results.memory();
        assert!(
            memory.contains("100000 of 100000 parked on 500 connections"),
            "{memory}"
        );
        assert!(
            memory.contains("hyper's own floor over HTTP/1.1, a connection each"),
            "{memory}"
        );
        assert!(
            memory.contains("**+148.4 MiB** (1556 bytes per parked request)"),
            "{memory}"
        );
    }

    #[test]
    fn a_parked_line_from_before_h2c_is_http1() {
        let old = r#"{"requests":10,"parked":10,"rss_before_kib":1,"rss_parked_kib":2,"extra_kib":1,"extra_bytes_per_request":102,"rss_after_hangup_kib":1,"parked_s":1.0,"slope_bytes_per_request":100.0,"target":10,"extra_at_target_kib":1.0}"#;
        let parked: Vec<Parked> = parse_lines(old).unwrap();
        assert_eq!(parked[0].protocol, "http1");
        assert_eq!(parked[0].connections, 0);
    }

    #[test]
    fn rounds_merge_into_medians_with_their_range() {
        let merged = merge_rounds(vec![
            point(FULL, 64, 3000.0, 30.0, 0),
            point(FLOOR, 64, 9000.0, 10.0, 0),
            point(FULL, 64, 4000.0, 20.0, 1),
            point(FULL, 64, 3500.0, 40.0, 0),
        ]);
        assert_eq!(merged.len(), 2);
        let full = &merged[0];
        assert_eq!(full.scenario, FULL);
        assert_eq!(full.report.rps, 3500.0);
        assert_eq!(full.report.p99_ms, 30.0);
        assert_eq!(full.report.requests, 3000);
        assert_eq!(full.report.errors, 1);
        assert_eq!(full.rps_range, Some((3000.0, 4000.0)));
        assert_eq!(full.cpu_ms["broker"], 1500.0);
        assert_eq!(merged[1].rps_range, None);
        let table = Results {
            points: merged,
            ..Results::default()
        }
        .table();
        assert!(table.contains("| 3500 (3000–4000) |"), "{table}");
    }

    #[test]
    fn errors_and_empty_runs_are_failures() {
        let mut results = results();
        assert!(results.failures().is_empty());
        results.points.push(point(PING, 1, 0.0, 0.0, 3));
        let failures = results.failures();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("public-web /ping at concurrency 1: 3 errors"));
    }

    #[test]
    fn traced_points_without_exported_spans_are_a_failure() {
        let mut results = results();
        results.points.push(point(FULL_TRACED, 16, 3_000.0, 9.0, 0));
        let sink = |spans| BTreeMap::from([("exports".to_owned(), 1), ("spans".to_owned(), spans)]);
        assert_eq!(export_failure(&results.points, &sink(120)), None);
        assert!(export_failure(&results.points, &sink(0)).is_some());
        assert_eq!(
            export_failure(&results.points, &BTreeMap::new()),
            None,
            "no sink read"
        );
        results.points.retain(|point| point.scenario != FULL_TRACED);
        assert_eq!(
            export_failure(&results.points, &sink(0)),
            None,
            "nothing traced ran"
        );
    }

    #[test]
    fn the_section_is_replaced_in_place() {
        let document = format!("# Benchmarks\n\nprose\n\n{BEGIN}\nold\n{END}\n\nafter\n");
        let updated = replace_section(&document, "new\n");
        assert_eq!(
            updated,
            format!("# Benchmarks\n\nprose\n\n{BEGIN}\nnew\n{END}\n\nafter\n")
        );
        let appended = replace_section("# Benchmarks\n", "new");
        assert_eq!(appended, format!("# Benchmarks\n\n{BEGIN}\nnew\n{END}\n"));
    }

    #[test]
    fn points_parse_from_bench_lines() {
        let line = r#"{"scenario":"full","concurrency":16,"busy":2,"report":{"rps":4100.5,"p50_ms":3.1,"p90_ms":4.0,"p99_ms":7.9,"max_ms":20.0,"requests":41005,"errors":0,"concurrency":16,"duration_s":10.0,"errors_by_kind":{},"abandoned":16}}"#;
        let points: Vec<Point> = parse_lines(&format!("{line}\n\n")).unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].busy, 2);
        assert_eq!(points[0].report.requests, 41005);
        assert!(
            parse_lines::<Point>("{not json")
                .unwrap_err()
                .starts_with("line 1")
        );
    }
}
