//! Acting a scenario out: the handler that answers each configured event
//! type by running its steps.
//!
//! Every step runs in its own span named by the config (`otel.name`), so a
//! trace reads like the simulated system; a failure is recorded as an
//! error on the span where it happens, marks every enclosing span as
//! failed on its way up, and ends the handler with an `Error` event. A
//! successful response reports every step run: its timing, what it drew
//! and, for calls, the response it got (so nested scenarios nest).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::ApiError;
use common::listener::Handler;
use common::{Event, HandlerError};
use futures_util::future::{BoxFuture, join_all};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::config::{CallStep, GroupStep, ScenarioConfig, SleepStep, Step};

/// The data field carrying how many calls deep a request is. A request
/// without it is at depth 0; a call sends its own depth + 1.
pub const CALL_DEPTH_FIELD: &str = "callDepth";

/// The handler for every event type of one scenario. Clones share the
/// config and the HTTP client.
#[derive(Clone)]
pub struct Scenario {
    inner: Arc<Inner>,
}

struct Inner {
    config: ScenarioConfig,
    http: reqwest::Client,
    /// public-web's `POST /`, which answers a call synchronously.
    submit_url: reqwest::Url,
}

/// What a step did, as reported in the response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StepReport {
    name: String,
    kind: &'static str,
    /// Where the step is in the config, e.g. `handlers.A.steps[1]`.
    path: String,
    ok: bool,
    elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    optional: bool,
    /// The kind's own facts: `sleptMs`, `roll`; `type`, `status`, `response`.
    #[serde(flatten)]
    detail: Map<String, Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    steps: Vec<StepReport>,
}

impl StepReport {
    /// The message that fails the parent, if this step failed and counts.
    fn failure(&self) -> Option<&str> {
        (!self.optional).then_some(self.error.as_deref()).flatten()
    }
}

/// How a step ended, before it is dressed as a [`StepReport`].
#[derive(Default)]
struct Outcome {
    detail: Map<String, Value>,
    steps: Vec<StepReport>,
    failure: Option<Failure>,
}

enum Failure {
    /// The step itself failed (a low roll, a call that failed): recorded
    /// as an error on its span.
    Here(String),
    /// A nested step failed and already recorded it; this one passes the
    /// message up.
    Nested(String),
}

impl Scenario {
    /// `public_web` is where calls go (public-web's base URL,
    /// `PUBLIC_WEB_URL`).
    pub fn new(config: ScenarioConfig, public_web: &reqwest::Url) -> reqwest::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                // Each call step has its own timeout; this only bounds a
                // call whose step forgot to.
                http: common::http::service_client(std::time::Duration::from_secs(60))?,
                submit_url: public_web.join("/").expect("an http(s) URL joins a path"),
            }),
        })
    }

    /// The event types this scenario answers (the dispatcher must route
    /// each of them to this listener's queue).
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.inner.config.handlers.keys().map(String::as_str)
    }

    /// Runs the steps configured for the request's type.
    pub async fn answer(&self, request: Event) -> Result<Event, HandlerError> {
        let handler = self.inner.config.handlers.get(&request.kind);
        let span_name = handler
            .and_then(|h| h.name.as_deref())
            .unwrap_or(&request.kind);
        let span = tracing::info_span!(
            "scenario",
            otel.name = %span_name,
            event.id = %request.id,
            event.type = %request.kind,
            scenario.call_depth = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let result = async {
            let handler = handler.ok_or_else(|| {
                HandlerError::invalid_input(format!(
                    "this scenario does not handle {}; it handles {}",
                    request.kind,
                    self.event_types().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let depth = call_depth(&request.data)?;
            Span::current().record("scenario.call_depth", depth);
            let started = Instant::now();
            let base = format!("handlers.{}.steps", request.kind);
            let (steps, failure) = self.run_sequence(&handler.steps, &base, depth).await;
            if let Some(message) = failure {
                return Err(HandlerError::failed(message));
            }
            let mut data = Map::new();
            data.insert("handled".into(), request.kind.clone().into());
            data.insert(CALL_DEPTH_FIELD.into(), depth.into());
            data.insert("elapsedMs".into(), millis_since(started).into());
            data.insert("steps".into(), to_value(&steps));
            Ok(Event {
                id: request.id.clone(),
                kind: handler.response_type(&request.kind),
                data,
            })
        }
        .instrument(span.clone())
        .await;
        if let Err(error) = &result {
            common::telemetry::record_error(&span, error);
            // Step failures were logged where they happened; a refused
            // request has no step to carry it.
            if error.code == common::wire::ErrorCode::InvalidInput {
                span.in_scope(|| tracing::error!(error = %error, "request refused"));
            }
        }
        result
    }

    /// Runs `steps` in order until one fails (optional ones excepted).
    async fn run_sequence(
        &self,
        steps: &[Step],
        base: &str,
        depth: u32,
    ) -> (Vec<StepReport>, Option<String>) {
        let mut reports = Vec::with_capacity(steps.len());
        for (index, step) in steps.iter().enumerate() {
            let report = self.run_step(step, format!("{base}[{index}]"), depth).await;
            let failure = report.failure().map(str::to_owned);
            reports.push(report);
            if failure.is_some() {
                return (reports, failure);
            }
        }
        (reports, None)
    }

    /// Runs `steps` concurrently, all to their end.
    async fn run_parallel(
        &self,
        steps: &[Step],
        base: &str,
        depth: u32,
    ) -> (Vec<StepReport>, Option<String>) {
        let reports = join_all(
            steps
                .iter()
                .enumerate()
                .map(|(index, step)| self.run_step(step, format!("{base}[{index}]"), depth)),
        )
        .await;
        let failures: Vec<&str> = reports.iter().filter_map(StepReport::failure).collect();
        let failure = (!failures.is_empty()).then(|| failures.join("; "));
        (reports, failure)
    }

    /// One step in its own span. Boxed because groups recurse.
    fn run_step<'a>(
        &'a self,
        step: &'a Step,
        path: String,
        depth: u32,
    ) -> BoxFuture<'a, StepReport> {
        let name = step.name();
        let span = tracing::info_span!(
            "scenario.step",
            otel.name = %name,
            scenario.step.kind = step.kind(),
            scenario.step.path = %path,
            scenario.step.optional = step.optional(),
            scenario.sleep.ms = Empty,
            scenario.failure_chance = Empty,
            scenario.roll = Empty,
            scenario.call.type = Empty,
            scenario.call.depth = Empty,
            scenario.call.timeout_ms = Empty,
            scenario.call.status = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let future = async move {
            let started = Instant::now();
            let outcome = match step {
                Step::Sleep(sleep) => self.sleep(sleep).await,
                Step::Call(call) => self.call(call, depth).await,
                Step::Parallel(GroupStep { steps, .. }) => {
                    let base = format!("{path}.parallel.steps");
                    Outcome::of_group(self.run_parallel(steps, &base, depth).await)
                }
                Step::Sequence(GroupStep { steps, .. }) => {
                    let base = format!("{path}.sequence.steps");
                    Outcome::of_group(self.run_sequence(steps, &base, depth).await)
                }
            };
            let error = outcome.failure.map(|failure| {
                Span::current().record("otel.status_code", "ERROR");
                match failure {
                    Failure::Here(reason) => {
                        let message = format!("step {name:?} at {path} failed: {reason}");
                        tracing::error!(error = %message, "step failed");
                        message
                    }
                    Failure::Nested(message) => message,
                }
            });
            StepReport {
                name,
                kind: step.kind(),
                path,
                ok: error.is_none(),
                elapsed_ms: millis_since(started),
                error,
                optional: step.optional(),
                detail: outcome.detail,
                steps: outcome.steps,
            }
        };
        Box::pin(future.instrument(span))
    }

    /// Sleeps for the configured time, then rolls against `failure_chance`.
    async fn sleep(&self, step: &SleepStep) -> Outcome {
        let span = Span::current();
        let ms = step.ms.pick();
        span.record("scenario.sleep.ms", ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut outcome = Outcome::default();
        outcome.detail.insert("sleptMs".into(), ms.into());
        if let Some(chance) = step.failure_chance {
            // In [0, 1): a chance of 1.0 always fails, 0.0 never does.
            let roll: f64 = rand::random();
            span.record("scenario.failure_chance", chance);
            span.record("scenario.roll", roll);
            outcome.detail.insert("failureChance".into(), chance.into());
            outcome.detail.insert("roll".into(), roll.into());
            if roll < chance {
                outcome.failure = Some(Failure::Here(format!(
                    "rolled {roll:.3}, below its failure_chance {chance}"
                )));
            }
        }
        outcome
    }

    /// Sends the configured event through public-web and waits for its
    /// response; any answer but a response event fails the step.
    async fn call(&self, step: &CallStep, depth: u32) -> Outcome {
        let span = Span::current();
        let next_depth = depth + 1;
        span.record("scenario.call.type", step.event_type.as_str());
        span.record("scenario.call.depth", next_depth);
        span.record("scenario.call.timeout_ms", step.timeout_ms);
        let mut outcome = Outcome::default();
        outcome
            .detail
            .insert("type".into(), step.event_type.clone().into());
        outcome
            .detail
            .insert(CALL_DEPTH_FIELD.into(), next_depth.into());
        let max_depth = self.inner.config.max_call_depth;
        if next_depth > max_depth {
            outcome.failure = Some(Failure::Here(format!(
                "the call depth limit ({max_depth}) is reached, so {} is not sent; \
                 is there a call cycle?",
                step.event_type
            )));
            return outcome;
        }

        let mut data = step.data.clone();
        data.insert(CALL_DEPTH_FIELD.into(), next_depth.into());
        let url = &self.inner.submit_url;
        let http_span = common::http::client_span("POST", url);
        let request = self
            .inner
            .http
            .post(url.clone())
            .headers(common::http::client_headers(&http_span))
            .timeout(Duration::from_millis(step.timeout_ms))
            .json(&json!({"type": step.event_type, "data": data}));
        let answer = http_span.scope(request.send()).await;
        common::http::record_client_outcome(&http_span, answer.as_ref().map(|r| r.status()));
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                outcome.failure = Some(Failure::Here(send_error(step, &error)));
                return outcome;
            }
        };
        let status = response.status();
        span.record("scenario.call.status", status.as_u16());
        outcome
            .detail
            .insert("status".into(), status.as_u16().into());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                outcome.failure = Some(Failure::Here(send_error(step, &error)));
                return outcome;
            }
        };
        let failure = if status.is_success() {
            match serde_json::from_slice::<Event>(&body) {
                Ok(event) => {
                    outcome
                        .detail
                        .insert("responseType".into(), event.kind.into());
                    outcome
                        .detail
                        .insert("response".into(), Value::Object(event.data));
                    return outcome;
                }
                Err(error) => format!(
                    "{} answered {status} with something that is not an event: {error}",
                    step.event_type
                ),
            }
        } else {
            let reason = ApiError::from_body(status, &body)
                .map(|error| error.to_string())
                .unwrap_or_else(|| status.to_string());
            format!("{} answered {reason}", step.event_type)
        };
        outcome.failure = Some(Failure::Here(failure));
        outcome
    }
}

impl Handler for Scenario {
    fn handle(&self, request: Event) -> impl Future<Output = Result<Event, HandlerError>> + Send {
        self.answer(request)
    }
}

impl Outcome {
    fn of_group((steps, failure): (Vec<StepReport>, Option<String>)) -> Self {
        Self {
            detail: Map::new(),
            steps,
            failure: failure.map(Failure::Nested),
        }
    }
}

/// Why a call got no answer: its timeout, or the transport.
fn send_error(step: &CallStep, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!(
            "{} got no response within {} ms",
            step.event_type, step.timeout_ms
        )
    } else {
        format!("{} could not be sent: {error}", step.event_type)
    }
}

/// The request's `callDepth` (0 when absent).
fn call_depth(data: &Map<String, Value>) -> Result<u32, HandlerError> {
    let Some(value) = data.get(CALL_DEPTH_FIELD) else {
        return Ok(0);
    };
    value
        .as_u64()
        .and_then(|depth| u32::try_from(depth).ok())
        .ok_or_else(|| {
            HandlerError::invalid_input(format!(
                "data.{CALL_DEPTH_FIELD} must be a whole number, got {value}"
            ))
        })
}

fn millis_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn to_value(reports: &[StepReport]) -> Value {
    serde_json::to_value(reports).expect("a step report always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::ErrorCode;

    /// A scenario whose calls go nowhere: fine for steps without calls.
    fn scenario(json: &str) -> Scenario {
        let config = ScenarioConfig::from_json(json).unwrap_or_else(|e| panic!("{e:?}"));
        Scenario::new(config, &"http://127.0.0.1:9".parse().unwrap()).unwrap()
    }

    fn request(kind: &str, data: Value) -> Event {
        Event::new(kind, data.as_object().unwrap().clone())
    }

    #[tokio::test]
    async fn reports_every_step() {
        let scenario = scenario(
            r#"{"handlers": {"WorkRequest": {"steps": [
                {"sleep": {"name": "first", "ms": 1}},
                {"parallel": {"name": "both", "steps": [
                    {"sleep": {"name": "left", "ms": {"min": 1, "max": 2}}},
                    {"sequence": {"steps": [{"sleep": {"name": "right", "ms": 0, "failure_chance": 0.0}}]}}
                ]}}
            ]}}}"#,
        );
        let request = request("WorkRequest", json!({}));
        let response = scenario.answer(request.clone()).await.unwrap();
        assert_eq!(response.id, request.id);
        assert_eq!(response.kind, "WorkResponse");
        assert_eq!(response.data["handled"], "WorkRequest");
        assert_eq!(response.data["callDepth"], 0);
        let steps = &response.data["steps"];
        assert_eq!(steps[0]["name"], "first");
        assert_eq!(steps[0]["sleptMs"], 1);
        assert_eq!(steps[1]["kind"], "parallel");
        assert_eq!(steps[1]["path"], "handlers.WorkRequest.steps[1]");
        assert_eq!(steps[1]["steps"][0]["name"], "left");
        let right = &steps[1]["steps"][1]["steps"][0];
        assert_eq!(right["name"], "right");
        assert_eq!(
            right["path"],
            "handlers.WorkRequest.steps[1].parallel.steps[1].sequence.steps[0]"
        );
        assert_eq!(right["ok"], true);
    }

    #[tokio::test]
    async fn a_sure_failure_fails_the_handler_and_stops_the_sequence() {
        let scenario = scenario(
            r#"{"handlers": {"PayRequest": {"steps": [
                {"sleep": {"name": "authorize", "ms": 0, "failure_chance": 1.0}},
                {"sleep": {"name": "never", "ms": 60000}}
            ]}}}"#,
        );
        let error = scenario
            .answer(request("PayRequest", json!({})))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::HandlerFailed);
        assert!(
            error.message.starts_with(
                "step \"authorize\" at handlers.PayRequest.steps[0] failed: rolled 0."
            ),
            "{}",
            error.message
        );
    }

    #[tokio::test]
    async fn an_optional_failure_is_reported_but_does_not_fail() {
        let scenario = scenario(
            r#"{"handlers": {"A": {"steps": [
                {"parallel": {"steps": [
                    {"sleep": {"name": "flaky", "ms": 0, "failure_chance": 1, "optional": true}},
                    {"sleep": {"name": "solid", "ms": 0}}
                ]}}
            ]}}}"#,
        );
        let response = scenario.answer(request("A", json!({}))).await.unwrap();
        assert_eq!(response.kind, "AResponse");
        let group = &response.data["steps"][0];
        assert_eq!(group["ok"], true);
        assert_eq!(group["steps"][0]["ok"], false);
        assert_eq!(group["steps"][0]["optional"], true);
        assert!(
            group["steps"][0]["error"]
                .as_str()
                .unwrap()
                .contains("rolled")
        );
        assert_eq!(group["steps"][1]["ok"], true);
    }

    #[tokio::test]
    async fn a_zero_chance_never_fails() {
        let scenario = scenario(
            r#"{"handlers": {"A": {"steps": [
                {"sleep": {"ms": 0, "failure_chance": 0.0}}
            ]}}}"#,
        );
        for _ in 0..2_000 {
            let response = scenario.answer(request("A", json!({}))).await.unwrap();
            assert!(response.data["steps"][0]["roll"].is_f64());
        }
    }

    #[tokio::test]
    async fn a_call_beyond_the_depth_limit_is_not_sent() {
        let scenario = scenario(
            r#"{"max_call_depth": 2, "handlers": {"A": {"steps": [
                {"call": {"name": "again", "type": "A"}}
            ]}}}"#,
        );
        let error = scenario
            .answer(request("A", json!({"callDepth": 2})))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::HandlerFailed);
        assert_eq!(
            error.message,
            "step \"again\" at handlers.A.steps[0] failed: the call depth limit (2) is \
             reached, so A is not sent; is there a call cycle?"
        );
    }

    #[tokio::test]
    async fn refuses_what_it_does_not_handle() {
        let scenario = scenario(r#"{"handlers": {"A": {}, "B": {}}}"#);
        let error = scenario.answer(request("C", json!({}))).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidInput);
        assert_eq!(
            error.message,
            "this scenario does not handle C; it handles A, B"
        );
        let error = scenario
            .answer(request("A", json!({"callDepth": "deep"})))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidInput);
        assert!(error.message.contains("callDepth"), "{}", error.message);
    }
}
