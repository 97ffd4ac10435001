//! OTLP exporters built from the standard environment variables, wrapped so
//! that a failing collector is counted on every failure but reported in the
//! log only when it starts and when it recovers.
//!
//! HTTP/protobuf (the default) is exported by [`HttpExporter`], which
//! writes each request body straight from the SDK's data (protobuf.rs) and
//! POSTs it the way the OTLP exporter specification asks (the standard
//! variables, retries with backoff); a malformed setting turns the export
//! off, naming the variable, rather than being guessed around. gRPC goes
//! through the OTLP crate's tonic exporter.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LoggerProviderBuilder};
use opentelemetry_sdk::trace::{SpanData, TracerProviderBuilder};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::protobuf::{self, EncodedResource};
use crate::config;

/// Which telemetry signal an exporter carries (the `signal` label).
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Traces,
    Logs,
}

impl Signal {
    fn label(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

/// An exporter that counts and reports its failures.
#[derive(Debug)]
pub struct Reported<E> {
    inner: E,
    signal: Signal,
    failing: AtomicBool,
}

impl<E> Reported<E> {
    fn new(inner: E, signal: Signal) -> Self {
        crate::metrics::init_telemetry_export(signal.label());
        Self {
            inner,
            signal,
            failing: AtomicBool::new(false),
        }
    }

    fn observe(&self, result: &OTelSdkResult) {
        let signal = self.signal.label();
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    eprintln!("OTLP {signal} export recovered");
                }
            }
            Err(error) => {
                crate::metrics::telemetry_export_failed(signal);
                // The first failure of a streak is news; the rest only repeat it.
                // stderr, not tracing: an export error logged through tracing
                // would be exported too.
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "OTLP {signal} export failing ({error}); counting further failures in telemetry_export_failures_total"
                    );
                }
            }
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Reported<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter for Reported<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The signal's own variable `OTEL_EXPORTER_OTLP_{SIGNAL}_{what}`, else the
/// general `OTEL_EXPORTER_OTLP_{what}`, with the name it was read from.
fn setting(signal: Signal, what: &str) -> Option<(String, String)> {
    let specific = format!(
        "OTEL_EXPORTER_OTLP_{}_{what}",
        signal.label().to_uppercase()
    );
    let general = format!("OTEL_EXPORTER_OTLP_{what}");
    [specific, general]
        .into_iter()
        .find_map(|name| config::var(&name).map(|value| (name, value)))
}

/// Whether the signal's protocol is gRPC (the spec's default is
/// HTTP/protobuf).
fn is_grpc(signal: Signal) -> bool {
    setting(signal, "PROTOCOL").is_some_and(|(_, protocol)| protocol.trim() == "grpc")
}

/// Builds `build`'s exporter on a thread of its own: a blocking reqwest
/// client must be built (and so dropped) outside the Tokio runtime.
fn off_runtime<T, E>(build: fn() -> Result<T, E>) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    std::thread::spawn(build)
        .join()
        .map_err(|_| "the exporter builder panicked".to_owned())?
        .map_err(|e| e.to_string())
}

/// `builder` with the OTLP span exporter the environment asks for (the
/// gRPC one is built inside the Tokio runtime, as tonic needs).
pub fn with_otlp_spans(builder: TracerProviderBuilder) -> TracerProviderBuilder {
    let signal = Signal::Traces;
    if is_grpc(signal) {
        let built = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build();
        attach(builder, signal, built, |b, e| b.with_batch_exporter(e))
    } else {
        let built = off_runtime(|| HttpExporter::from_env(Signal::Traces));
        attach(builder, signal, built, |b, e| b.with_batch_exporter(e))
    }
}

/// `builder` with the OTLP log exporter the environment asks for.
pub fn with_otlp_logs(builder: LoggerProviderBuilder) -> LoggerProviderBuilder {
    let signal = Signal::Logs;
    if is_grpc(signal) {
        let built = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .build();
        attach(builder, signal, built, |b, e| b.with_batch_exporter(e))
    } else {
        let built = off_runtime(|| HttpExporter::from_env(Signal::Logs));
        attach(builder, signal, built, |b, e| b.with_batch_exporter(e))
    }
}

/// `builder` with the exporter `built`, reported; without it, and why on
/// stderr, when it could not be built.
fn attach<B, E>(
    builder: B,
    signal: Signal,
    built: Result<E, impl std::fmt::Display>,
    add: impl FnOnce(B, Reported<E>) -> B,
) -> B {
    match built {
        Ok(exporter) => add(builder, Reported::new(exporter, signal)),
        Err(error) => {
            eprintln!("OTLP {} export disabled: {error}", signal.label());
            builder
        }
    }
}

/// Why an [`HttpExporter`] cannot be built: a setting, named.
#[derive(Debug, thiserror::Error)]
pub enum HttpExporterError {
    #[error("{name}={value:?}: {reason}")]
    Setting {
        name: String,
        value: String,
        reason: &'static str,
    },
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// OTLP over HTTP/protobuf for one signal: `POST` of each batch to
/// `OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT` (as given) or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/{signal}`, with the `_HEADERS` and
/// `_TIMEOUT` settings the OTLP exporter specification defines.
/// Compression is not offered (nor is it by the OTLP crate as built here).
#[derive(Debug)]
pub struct HttpExporter {
    client: reqwest::blocking::Client,
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
    resource: EncodedResource,
}

impl HttpExporter {
    /// The exporter for `signal` the environment describes.
    pub fn from_env(signal: Signal) -> Result<Self, HttpExporterError> {
        let bad = |(name, value): (String, String), reason| HttpExporterError::Setting {
            name,
            value,
            reason,
        };
        let specific = format!(
            "OTEL_EXPORTER_OTLP_{}_ENDPOINT",
            signal.label().to_uppercase()
        );
        let (name, url) = match config::var(&specific) {
            Some(url) => (specific, url),
            None => {
                let base = config::var("OTEL_EXPORTER_OTLP_ENDPOINT");
                let url = format!(
                    "{}/v1/{}",
                    base.as_deref()
                        .unwrap_or("http://localhost:4318")
                        .trim_end_matches('/'),
                    signal.label()
                );
                ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), url)
            }
        };
        let url = match Url::parse(&url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => return Err(bad((name, url), "expected an http:// URL")),
        };
        let timeout = match setting(signal, "TIMEOUT") {
            Some(setting) => match setting.1.trim().parse::<u64>() {
                Ok(millis) => Duration::from_millis(millis),
                Err(_) => return Err(bad(setting, "expected milliseconds")),
            },
            None => Duration::from_secs(10),
        };
        if let Some(setting) = setting(signal, "COMPRESSION")
            && !setting.1.trim().eq_ignore_ascii_case("none")
        {
            return Err(bad(setting, "compression is not supported; unset it"));
        }
        let headers = match setting(signal, "HEADERS") {
            Some(setting) => match parse_headers(&setting.1) {
                Some(headers) => headers,
                None => return Err(bad(setting, "expected key=value pairs separated by commas")),
            },
            None => HeaderMap::new(),
        };
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("research-dispatcher/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            url,
            headers,
            timeout,
            resource: EncodedResource::default(),
        })
    }

    /// POSTs `body`, retrying as the OTLP specification asks (connection
    /// failures, 429, 502, 503, 504; `Retry-After` honoured) with backoff,
    /// at most [`RETRIES`] more times and within the export timeout.
    fn post(&self, body: Vec<u8>) -> OTelSdkResult {
        let body = bytes::Bytes::from(body);
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(100);
        for attempt in 0..=RETRIES {
            let retry_after = match self.post_once(body.clone()) {
                Attempt::Done(result) => return result,
                Attempt::Retry(retry_after) => retry_after,
            };
            let wait = retry_after.unwrap_or(backoff);
            backoff *= 2;
            if attempt == RETRIES || Instant::now() + wait >= deadline {
                break;
            }
            std::thread::sleep(wait);
        }
        Err(OTelSdkError::InternalFailure(format!(
            "POST {}: still failing after {RETRIES} retries",
            self.url
        )))
    }

    fn post_once(&self, body: bytes::Bytes) -> Attempt {
        let sent = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send();
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_connect() || error.is_timeout() => return Attempt::Retry(None),
            Err(error) => return Attempt::Done(Err(failure(&self.url, error))),
        };
        let status = response.status();
        // Never longer than the export may take, whatever the server asks.
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.trim().parse().ok())
            .map(|secs| Duration::from_secs(secs).min(self.timeout));
        // Read to the end (up to a bound: it comes from elsewhere), so the
        // connection can carry the next export. A partial success's
        // rejected counts are not reported.
        let _ = std::io::copy(
            &mut std::io::Read::take(response, MAX_RESPONSE_BYTES),
            &mut std::io::sink(),
        );
        match status.as_u16() {
            200..=299 => Attempt::Done(Ok(())),
            429 | 502 | 503 | 504 => Attempt::Retry(retry_after),
            _ => Attempt::Done(Err(failure(&self.url, format!("HTTP {status}")))),
        }
    }
}

/// Retries of one export after its first attempt.
const RETRIES: u32 = 3;

/// The most of a collector's answer that is read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// How one POST went.
enum Attempt {
    Done(OTelSdkResult),
    /// Worth another try, after the server's `Retry-After` if it gave one.
    Retry(Option<Duration>),
}

fn failure(url: &Url, error: impl std::fmt::Display) -> OTelSdkError {
    OTelSdkError::InternalFailure(format!("POST {url}: {error}"))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas,
/// values percent-encoded (W3C Baggage's format); `None` if malformed.
fn parse_headers(text: &str) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for pair in text.split(',').filter(|pair| !pair.trim().is_empty()) {
        let (key, value) = pair.split_once('=')?;
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .ok()?;
        headers.insert(
            HeaderName::try_from(key.trim()).ok()?,
            HeaderValue::try_from(value.as_ref()).ok()?,
        );
    }
    Some(headers)
}

impl opentelemetry_sdk::trace::SpanExporter for HttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.post(protobuf::trace_request(&batch, &self.resource))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::from(&ResourceAttributesWithSchema::from(resource));
    }
}

impl opentelemetry_sdk::logs::LogExporter for HttpExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.post(protobuf::logs_request(&batch, &self.resource))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::from(&ResourceAttributesWithSchema::from(resource));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A collector that answers its connections with `statuses`, one each,
    /// and says how many requests it read.
    fn collector(statuses: &'static [&'static str]) -> (Url, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let served = std::thread::spawn(move || {
            for status in statuses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                }
                reader.read_exact(&mut vec![0; length]).unwrap();
                write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\nretry-after: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .unwrap();
            }
            statuses.len()
        });
        (url.parse().unwrap(), served)
    }

    fn exporter(url: Url) -> HttpExporter {
        HttpExporter {
            client: reqwest::blocking::Client::new(),
            url,
            headers: HeaderMap::new(),
            timeout: Duration::from_secs(5),
            resource: EncodedResource::default(),
        }
    }

    #[test]
    fn an_unavailable_collector_is_tried_again() {
        let (url, served) =
            collector(&["503 Service Unavailable", "429 Too Many Requests", "200 OK"]);
        assert!(exporter(url).post(vec![1, 2, 3]).is_ok());
        assert_eq!(served.join().unwrap(), 3);
    }

    #[test]
    fn a_retry_after_longer_than_the_timeout_ends_the_export() {
        let (url, served) =
            collector(&["503 Service Unavailable\r\nretry-after: 18446744073709551615"]);
        let started = Instant::now();
        let error = exporter(url).post(vec![1]).unwrap_err();
        assert!(error.to_string().contains("retries"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(served.join().unwrap(), 1);
    }

    #[test]
    fn a_refused_export_is_not_tried_again() {
        let (url, served) = collector(&["400 Bad Request"]);
        let error = exporter(url).post(vec![1]).unwrap_err();
        assert!(error.to_string().contains("HTTP 400"), "{error}");
        assert_eq!(served.join().unwrap(), 1);
    }

    #[test]
    fn headers_are_pairs_with_percent_encoded_values() {
        let headers = parse_headers("api-key=s%20x, tenant = a ,").unwrap();
        assert_eq!(headers["api-key"], "s x");
        assert_eq!(headers["tenant"], "a");
        assert!(parse_headers("no-equals-sign").is_none());
        assert!(parse_headers("bad header=x").is_none());
    }
}
