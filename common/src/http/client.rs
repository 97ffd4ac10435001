//! Calling another service: the shared client settings, and the CLIENT
//! span with the trace context in the request's headers.

use std::time::Duration;

use axum::http::StatusCode;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use opentelemetry_http::HeaderInjector;

use crate::telemetry::{self, HopSpan, propagation};

/// The HTTP client a service keeps for its calls to another service: one
/// per service, reused, so its pool keeps connections alive.
pub fn service_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    client_builder(timeout).build()
}

/// The settings of every client: each call bounded by `timeout`; no
/// redirects followed and no proxy from the environment (calls go to our
/// own services, or where an egress policy allows, and either would leave
/// it); idle pooled connections dropped before a server of ours closes
/// them (its header timeout, 10 s by default, also ends idle HTTP/1.1
/// connections), so a call never goes out on a connection being closed.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(4))
        .tcp_nodelay(true)
}

/// A CLIENT span for an outgoing HTTP call: send the request with the
/// headers from [`client_headers`], inside the span
/// (`span.scope(request.send())`), then
/// [`record_client_outcome`].
pub fn client_span(method: &'static str, url: &reqwest::Url) -> HopSpan {
    client_span_in(method, url, telemetry::hop::current_context)
}

/// [`client_span`] as a child of the context `parent` gives, not the
/// current one: a call made on behalf of a trace that began elsewhere.
pub fn client_span_in(
    method: &'static str,
    url: &reqwest::Url,
    parent: impl FnOnce() -> opentelemetry::Context,
) -> HopSpan {
    HopSpan::start(
        || method.into(),
        SpanKind::Client,
        parent,
        || {
            vec![
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.full", redacted(url)),
                KeyValue::new(
                    "server.address",
                    url.host_str().unwrap_or_default().to_owned(),
                ),
                KeyValue::new(
                    "server.port",
                    i64::from(url.port_or_known_default().unwrap_or_default()),
                ),
            ]
        },
    )
}

/// `url` as `url.full` may show it: credentials replaced by `REDACTED`,
/// as OpenTelemetry's semantic conventions ask.
fn redacted(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.as_str().to_owned();
    }
    let mut shown = url.clone();
    // Only fails for URLs that cannot have credentials, which had none.
    let _ = shown.set_username("REDACTED");
    let _ = shown.set_password(Some("REDACTED"));
    shown.into()
}

/// Headers carrying `span`'s trace context to the callee.
pub fn client_headers(span: &HopSpan) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(context) = span.context() {
        propagation::inject(context, &mut HeaderInjector(&mut headers));
    }
    headers
}

/// Records how an outgoing call ended on its CLIENT span: 4xx and 5xx
/// answers and transport errors mark it as an error.
pub fn record_client_outcome(span: &HopSpan, outcome: Result<StatusCode, &reqwest::Error>) {
    match outcome {
        Ok(status) => {
            span.set_attribute(|| {
                KeyValue::new("http.response.status_code", i64::from(status.as_u16()))
            });
            if status.is_client_error() || status.is_server_error() {
                span.record_error(format_args!("HTTP {}", status.as_u16()));
            }
        }
        Err(error) => {
            let cause = error_chain(error);
            span.record_error(&cause);
            span.in_scope(|| tracing::warn!(error = %cause, "HTTP call failed"));
        }
    }
}

/// `error` followed by its sources: reqwest's own message names only the
/// URL, the cause (refused, reset, timed out) is in the sources.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn credentials_never_reach_url_full() {
        let url = reqwest::Url::parse("http://user:hunter2@host:1/dispatch?q=1").unwrap();
        assert_eq!(
            redacted(&url),
            "http://REDACTED:REDACTED@host:1/dispatch?q=1"
        );
        let plain = reqwest::Url::parse("http://host:1/dispatch").unwrap();
        assert_eq!(redacted(&plain), "http://host:1/dispatch");
    }

    #[test]
    fn error_chain_names_every_cause() {
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(
            error_chain(&error),
            "error sending request: connection refused"
        );
    }
}
