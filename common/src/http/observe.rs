//! The per-request observation every service applies to inbound HTTP: a
//! SERVER span whose parent is the caller's trace context, the request
//! duration histogram, and the trace id in the response's `x-trace-id`.
//!
//! A tower layer with a future of its own rather than an
//! `axum::middleware::from_fn`: that boxes a future holding the request,
//! the span and `Next` for as long as the request runs, and public-web's
//! parked requests run for seconds to minutes, 100,000 at a time. This
//! future holds the inner future and what it records at the end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use opentelemetry_http::HeaderExtractor;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::telemetry::HopSpan;
use crate::telemetry::hop::InHop;
use crate::telemetry::propagation;
use crate::wire::TRACE_ID_HEADER;

/// Observes each request of the service it wraps (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let observation = Observation::start(&request);
        let inner = match &observation {
            Some(observation) => {
                let inner = observation.span.in_scope(|| self.inner.call(request));
                observation.span.scope(inner)
            }
            None => InHop::untraced(self.inner.call(request)),
        };
        Observed { inner, observation }
    }
}

pin_project! {
    /// A request in flight, inside its SERVER span.
    pub struct Observed<F> {
        #[pin]
        inner: InHop<F>,
        observation: Option<Observation>,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Some(observation), Ok(response)) = (this.observation.take(), &mut result) {
            observation.finish(response);
        }
        Poll::Ready(result)
    }
}

/// What is recorded of one request when it ends.
struct Observation {
    span: HopSpan,
    /// `None` for a request no route matched (answered by the fallback).
    route: Option<MatchedPath>,
    method: Method,
    started: Instant,
}

impl Observation {
    /// `None` for the operational routes: probes and scrapes, too
    /// frequent and too dull to trace.
    fn start(request: &Request) -> Option<Self> {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let route_name = route_name(route.as_ref());
        if matches!(route_name, "/healthz" | "/readyz" | "/metrics") {
            return None;
        }
        let method = request.method().clone();
        let method_name = method_name(&method);
        let span = HopSpan::start(
            || format!("{method_name} {route_name}").into(),
            SpanKind::Server,
            || propagation::extract(&HeaderExtractor(request.headers())),
            || {
                vec![
                    KeyValue::new("http.request.method", method_name),
                    KeyValue::new("http.route", route_name.to_owned()),
                    KeyValue::new("url.path", request.uri().path().to_owned()),
                ]
            },
        );
        Some(Self {
            span,
            route,
            method,
            started: Instant::now(),
        })
    }

    fn finish(self, response: &mut Response) {
        let status = response.status();
        self.span.set_attribute(|| {
            KeyValue::new("http.response.status_code", i64::from(status.as_u16()))
        });
        if status.is_server_error() {
            self.span
                .record_error(format_args!("HTTP {}", status.as_u16()));
        }
        crate::metrics::http_request_finished(
            route_name(self.route.as_ref()),
            method_name(&self.method),
            status.as_u16(),
            self.started.elapsed(),
        );
        // Made here, not held: a parked request would carry it for its
        // whole wait.
        let trace_id = self.span.trace_id();
        if let Some(trace_id) = trace_id.and_then(|id| HeaderValue::try_from(id.to_string()).ok()) {
            response.headers_mut().insert(TRACE_ID_HEADER, trace_id);
        }
    }
}

/// The route's pattern, the `http.route` of its spans and metrics.
fn route_name(route: Option<&MatchedPath>) -> &str {
    route.map_or("unmatched", MatchedPath::as_str)
}

/// The method as spans and metrics name it: a method outside HTTP's
/// registered set is `_OTHER` (the semantic conventions' rule), so a
/// client inventing methods cannot grow the label sets without bound.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}
