//! prime-listener: answers `NthPrimeRequest {n}` with
//! `NthPrimeResponse {n, prime}` (the ZeroMQ demo's workload). Everything
//! but the handler is the shared listener runtime in [`common::listener`];
//! instances compete for one queue.
//!
//! The sieve is CPU-bound, so it runs on tokio's blocking pool behind a
//! semaphore sized to the cores: the async workers stay free for the broker
//! and the health probes, and a burst of requests queues for a core instead
//! of oversubscribing the machine.

pub mod prime;

use std::future::Future;
use std::sync::Arc;

use common::config::{self, ConfigError};
use common::listener::Handler;
use common::{Event, HandlerError};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tracing::field::Empty;
use tracing::{Instrument, Span};

pub const SERVICE_NAME: &str = "prime-listener";
pub const DEFAULT_QUEUE: &str = "prime-request";
pub const DEFAULT_PORT: u16 = 3003;
pub const NTH_PRIME_REQUEST: &str = "NthPrimeRequest";
pub const NTH_PRIME_RESPONSE: &str = "NthPrimeResponse";
/// The largest `n` served unless `PRIME_MAX_N` says otherwise (its prime,
/// 15,485,863, takes tens of milliseconds).
pub const DEFAULT_MAX_N: u64 = 1_000_000;

/// What this listener reads besides the [`common::listener::ListenerConfig`].
#[derive(Debug, Clone)]
pub struct PrimeConfig {
    /// The largest `n` accepted (`PRIME_MAX_N`); above it the answer is 422.
    pub max_n: u64,
    /// Computations running at once (`PRIME_WORKERS`, default the cores).
    pub workers: usize,
}

impl PrimeConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let config = Self {
            max_n: config::parse_or("PRIME_MAX_N", DEFAULT_MAX_N)?,
            workers: config::parse_or("PRIME_WORKERS", cores)?,
        };
        if config.max_n == 0 {
            return Err(ConfigError::invalid(
                "PRIME_MAX_N",
                "0",
                "must be at least 1",
            ));
        }
        if config.workers == 0 {
            return Err(ConfigError::invalid(
                "PRIME_WORKERS",
                "0",
                "must be at least 1",
            ));
        }
        Ok(config)
    }
}

/// The `NthPrimeRequest` handler. Clones share one worker pool.
#[derive(Debug, Clone)]
pub struct PrimeHandler {
    max_n: u64,
    workers: Arc<Semaphore>,
}

impl PrimeHandler {
    pub fn new(config: &PrimeConfig) -> Self {
        Self {
            max_n: config.max_n,
            workers: Arc::new(Semaphore::new(config.workers)),
        }
    }

    /// Validates `n`, computes its prime off the async runtime and answers.
    pub async fn answer(&self, request: Event) -> Result<Event, HandlerError> {
        let span = tracing::info_span!(
            "nth_prime",
            event.id = %request.id,
            prime.n = Empty,
            prime.value = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let result = self.compute(request).instrument(span.clone()).await;
        if let Err(error) = &result {
            record_error(&span, error);
        }
        result
    }

    async fn compute(&self, request: Event) -> Result<Event, HandlerError> {
        if request.kind != NTH_PRIME_REQUEST {
            return Err(HandlerError::invalid_input(format!(
                "expected a {NTH_PRIME_REQUEST}, got {}",
                request.kind
            )));
        }
        let n = parse_n(&request.data, self.max_n)?;
        Span::current().record("prime.n", n);
        // The permit moves into the blocking task, so a computation holds
        // its core until it really ends, even if the request is abandoned.
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HandlerError::failed("the prime worker pool is closed"))?;
        let prime = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            prime::nth_prime(n)
        })
        .await
        .map_err(|error| HandlerError::failed(format!("the prime computation failed: {error}")))?;
        Span::current().record("prime.value", prime);

        let mut data = Map::new();
        data.insert("n".into(), n.into());
        data.insert("prime".into(), prime.into());
        Ok(Event {
            id: request.id,
            kind: NTH_PRIME_RESPONSE.to_owned(),
            data,
        })
    }
}

impl Handler for PrimeHandler {
    fn handle(&self, request: Event) -> impl Future<Output = Result<Event, HandlerError>> + Send {
        self.answer(request)
    }
}

/// `data.n` as a whole number in `1..=max_n`.
fn parse_n(data: &Map<String, Value>, max_n: u64) -> Result<u64, HandlerError> {
    let value = data.get("n").ok_or_else(|| {
        HandlerError::invalid_input("data.n is required: which prime to find (1 finds 2)")
    })?;
    let n = match value {
        Value::Number(number) if number.is_u64() => number.as_u64(),
        Value::Number(number) if number.is_i64() => None,
        _ => {
            return Err(HandlerError::invalid_input(format!(
                "data.n must be a whole number, got {value}"
            )));
        }
    };
    match n {
        Some(n) if (1..=max_n).contains(&n) => Ok(n),
        Some(n) if n > max_n => Err(HandlerError::invalid_input(format!(
            "data.n must be at most {max_n}, got {n}"
        ))),
        _ => Err(HandlerError::invalid_input(format!(
            "data.n must be at least 1, got {value}"
        ))),
    }
}

/// Marks the span as failed, the way the OpenTelemetry layer reads it.
fn record_error(span: &Span, error: &HandlerError) {
    common::telemetry::record_error(span, error);
    span.in_scope(|| tracing::error!(error = %error, "nth prime not computed"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::ErrorCode;
    use serde_json::json;

    fn handler(max_n: u64) -> PrimeHandler {
        PrimeHandler::new(&PrimeConfig { max_n, workers: 2 })
    }

    fn request(data: Value) -> Event {
        Event::new(NTH_PRIME_REQUEST, data.as_object().unwrap().clone())
    }

    #[tokio::test]
    async fn answers_n_and_prime() {
        let request = request(json!({"n": 1001}));
        let response = handler(DEFAULT_MAX_N)
            .answer(request.clone())
            .await
            .unwrap();
        assert_eq!(response.id, request.id);
        assert_eq!(response.kind, NTH_PRIME_RESPONSE);
        assert_eq!(
            Value::Object(response.data),
            json!({"n": 1001, "prime": 7927})
        );
    }

    #[tokio::test]
    async fn refuses_bad_n_as_invalid_input() {
        let handler = handler(10_000);
        for (data, message) in [
            (json!({}), "required"),
            (json!({"n": 0}), "at least 1, got 0"),
            (json!({"n": -3}), "at least 1, got -3"),
            (json!({"n": 1.5}), "whole number, got 1.5"),
            (json!({"n": "12"}), "whole number, got \"12\""),
            (json!({"n": null}), "whole number, got null"),
            (json!({"n": 10_001}), "at most 10000, got 10001"),
        ] {
            let error = handler.answer(request(data.clone())).await.unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidInput, "{data}");
            assert!(error.message.contains(message), "{data}: {}", error.message);
        }
        let mut wrong_type = request(json!({"n": 3}));
        wrong_type.kind = "PingRequest".into();
        let error = handler.answer(wrong_type).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidInput);
    }

    /// `#[tokio::test]` runs on a single thread: were the sieve computed on
    /// it, the timer below could not fire before the sieve ended.
    #[tokio::test]
    async fn the_sieve_does_not_block_the_runtime() {
        let handler = handler(DEFAULT_MAX_N);
        let computation = handler.answer(request(json!({"n": DEFAULT_MAX_N})));
        tokio::pin!(computation);
        tokio::select! {
            biased;
            _ = &mut computation => panic!("the sieve ran on the async thread"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
        }
        let response = computation.await.unwrap();
        assert_eq!(response.data["prime"], json!(15_485_863));
    }
}
