//! What the benchmark binaries share: latency histograms and the report
//! they print (the very [`req::LoadReport`] shape `req --json` prints, so
//! bin/bench reads every scenario the same way), the broker URL, reading a
//! process's resident memory and a service's gauges.

pub mod report;
pub mod sweep;

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
pub use req::LoadReport;

/// The broker every service uses unless told otherwise.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `AMQP_URL`, or the services' default.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned())
}

/// A latency histogram in microseconds with req's bounds (1 µs to an hour,
/// 3 significant digits), so percentiles compare digit for digit.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Records one successful exchange of `elapsed`.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// The report of a closed-loop run, computed exactly as `req` computes it:
/// requests are successes plus errors, percentiles are of successes only.
pub fn load_report(
    latencies: &Histogram<u64>,
    errors_by_kind: BTreeMap<String, u64>,
    concurrency: usize,
    elapsed: Duration,
    abandoned: u64,
) -> LoadReport {
    let errors: u64 = errors_by_kind.values().sum();
    let requests = latencies.len() + errors;
    let elapsed_s = elapsed.as_secs_f64();
    let ms = |micros: u64| round3(micros as f64 / 1000.0);
    LoadReport {
        rps: if elapsed_s > 0.0 {
            round3(requests as f64 / elapsed_s)
        } else {
            0.0
        },
        p50_ms: ms(latencies.value_at_quantile(0.50)),
        p90_ms: ms(latencies.value_at_quantile(0.90)),
        p99_ms: ms(latencies.value_at_quantile(0.99)),
        max_ms: ms(latencies.max()),
        requests,
        errors,
        concurrency,
        duration_s: round3(elapsed_s),
        errors_by_kind,
        abandoned,
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The resident set size of process `pid` in KiB (`VmRSS` of
/// `/proc/<pid>/status`).
pub fn vm_rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss_kib(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no VmRSS line in /proc/{pid}/status"),
        )
    })
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The gauge `name` (unlabelled) from the Prometheus text at `url`.
pub async fn scrape_gauge(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<usize> {
    use anyhow::Context;
    let text = http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("scraping {url}"))?
        .text()
        .await?;
    parse_gauge(&text, name).with_context(|| format!("{url} has no {name}"))
}

/// The value of an unlabelled gauge in Prometheus text.
fn parse_gauge(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .map(|value| value.max(0.0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_unlabelled_gauge() {
        let text = "# TYPE public_web_pending_requests gauge\npublic_web_pending_requests 1234\npublic_web_request_timeouts_total 0\n";
        assert_eq!(parse_gauge(text, "public_web_pending_requests"), Some(1234));
        assert_eq!(parse_gauge("", "public_web_pending_requests"), None);
    }

    #[test]
    fn report_counts_errors_as_requests_but_not_in_latencies() {
        let mut latencies = latency_histogram();
        for ms in [1, 2, 3, 4] {
            record(&mut latencies, Duration::from_millis(ms));
        }
        let errors = BTreeMap::from([("timeout".to_owned(), 1)]);
        let report = load_report(&latencies, errors, 4, Duration::from_secs(2), 3);
        assert_eq!(report.requests, 5);
        assert_eq!(report.errors, 1);
        assert_eq!(report.rps, 2.5);
        assert_eq!(report.p50_ms, 2.0);
        assert!((report.max_ms - 4.0).abs() < 0.01, "{}", report.max_ms);
        assert_eq!(report.abandoned, 3);
        let json: serde_json::Value = serde_json::from_str(&report.to_json_line()).unwrap();
        for key in [
            "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "requests", "errors",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }

    #[test]
    fn vm_rss_is_read_from_the_status_file() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    4242 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(4242));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        let own = vm_rss_kib(std::process::id()).unwrap();
        assert!(
            own > 100,
            "a running test process has some memory: {own} KiB"
        );
    }
}
