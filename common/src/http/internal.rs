//! The internal hops' authentication over HTTP: signing an outgoing
//! internal request, and [`SignedEvent`], the extractor that lets an
//! incoming one through only with a valid signature it has not seen
//! before (see [`crate::wire::signature`] for what is signed and why).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use super::error::ApiError;
use super::extract::ApiJson;
use crate::config::{self, ConfigError};
use crate::wire::signature::{self, Claimed, Hop, SignatureError, Signed};
use crate::wire::{
    CALLBACK_URL_HEADER, CORRELATION_HEADER, Event, InternalSecret, NONCE_HEADER, SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
};

/// How a service signs and checks its internal hops.
#[derive(Debug, Clone)]
pub struct InternalAuth {
    /// `None` only in the insecure development mode.
    secret: Option<InternalSecret>,
    /// How far a signature's timestamp may be from this service's clock
    /// (`SIGNATURE_TOLERANCE_MS`).
    tolerance: Duration,
    /// Signatures accepted within the tolerance, shared by the clones.
    seen: Arc<Seen>,
}

impl InternalAuth {
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(30);

    pub fn new(secret: Option<InternalSecret>, tolerance: Duration) -> Self {
        Self {
            secret,
            tolerance,
            seen: Arc::new(Seen::new(tolerance)),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self::new(
            InternalSecret::from_env()?,
            config::millis_or(
                "SIGNATURE_TOLERANCE_MS",
                Self::DEFAULT_TOLERANCE.as_millis() as u64,
            )?,
        ))
    }

    /// Whether internal hops are signed (false only in development mode).
    pub fn is_enforced(&self) -> bool {
        self.secret.is_some()
    }

    /// The headers that sign `body` about `correlation` on `hop`, naming
    /// `callback_url`: the correlation id and the callback URL always, the
    /// timestamp and signature when a secret is configured.
    pub fn headers(
        &self,
        hop: Hop,
        correlation: &str,
        callback_url: Option<&str>,
        body: &[u8],
    ) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(5);
        headers.insert(CORRELATION_HEADER, header_value(correlation));
        if let Some(url) = callback_url {
            headers.insert(CALLBACK_URL_HEADER, header_value(url));
        }
        if let Some(secret) = &self.secret {
            let timestamp = signature::unix_millis().to_string();
            let nonce = format!("{:016x}", rand::random::<u64>());
            let signed = Signed {
                timestamp: &timestamp,
                nonce: &nonce,
                correlation,
                callback_url: callback_url.unwrap_or_default(),
            };
            let signature = secret.sign(hop, &signed, body);
            headers.insert(TIMESTAMP_HEADER, header_value(&timestamp));
            headers.insert(NONCE_HEADER, header_value(&nonce));
            headers.insert(SIGNATURE_HEADER, header_value(&signature));
        }
        headers
    }

    /// The correlation id `headers` vouch for, for `body` on `hop`.
    fn verify<'a>(
        &self,
        hop: Hop,
        headers: &'a HeaderMap,
        body: &[u8],
    ) -> Result<&'a str, SignatureError> {
        let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
        let claimed = Claimed {
            correlation: text(CORRELATION_HEADER),
            timestamp: text(TIMESTAMP_HEADER),
            nonce: text(NONCE_HEADER),
            signature: text(SIGNATURE_HEADER),
            callback_url: text(CALLBACK_URL_HEADER),
        };
        let Some(secret) = &self.secret else {
            return signature::correlation(claimed.correlation);
        };
        let correlation =
            secret.verify(hop, claimed, body, signature::unix_millis(), self.tolerance)?;
        if !self.seen.first_time(claimed.signature.unwrap_or_default()) {
            return Err(SignatureError::Replayed);
        }
        Ok(correlation)
    }
}

/// The signatures accepted in the last two tolerance windows: a valid one
/// seen again is a replay. Older ones need no memory, their timestamps are
/// out of tolerance. Kept as 64-bit keyed hashes, in two generations that
/// rotate every window.
#[derive(Debug)]
struct Seen {
    window: Duration,
    hasher: std::hash::RandomState,
    generations: Mutex<Generations>,
}

#[derive(Debug)]
struct Generations {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    rotated: tokio::time::Instant,
}

impl Seen {
    fn new(tolerance: Duration) -> Self {
        Self {
            // A signature is valid from `tolerance` before its timestamp to
            // `tolerance` after: two windows of that length cover it.
            window: tolerance.max(Duration::from_secs(1)) * 2,
            hasher: std::hash::RandomState::new(),
            generations: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                rotated: tokio::time::Instant::now(),
            }),
        }
    }

    /// Whether `signature` is seen for the first time (and remembers it).
    fn first_time(&self, signature: &str) -> bool {
        let key = self.hasher.hash_one(signature);
        let mut generations = self.generations.lock().expect("seen lock");
        if generations.rotated.elapsed() >= self.window {
            let current = std::mem::take(&mut generations.current);
            generations.previous = current;
            generations.rotated = tokio::time::Instant::now();
        }
        !generations.previous.contains(&key) && generations.current.insert(key)
    }
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("a correlation id or signature is a valid header value")
}

/// A service state that knows how to check internal hops: what
/// [`SignedEvent`] needs of the state.
pub trait HasInternalAuth {
    fn internal_auth(&self) -> &InternalAuth;
}

impl<T: HasInternalAuth> HasInternalAuth for Arc<T> {
    fn internal_auth(&self) -> &InternalAuth {
        (**self).internal_auth()
    }
}

/// Which hop an extractor checks signatures for.
pub trait SignedHop: Send + Sync + 'static {
    const HOP: Hop;
}

/// public-web → dispatcher `POST /`.
pub struct SubmitHop;
impl SignedHop for SubmitHop {
    const HOP: Hop = Hop::Submit;
}

/// dispatcher → public-web `POST /dispatch`.
pub struct CallbackHop;
impl SignedHop for CallbackHop {
    const HOP: Hop = Hop::Callback;
}

/// A valid event from a peer service, with the correlation id its
/// signature vouches for and the body as received (a relay hands that on
/// instead of serialising the event again). Unsigned or wrongly signed
/// requests are a 401 whose message says what was wrong.
pub struct SignedEvent<H> {
    pub correlation: String,
    pub event: Event,
    pub body: Bytes,
    hop: PhantomData<H>,
}

impl<S, H> FromRequest<S> for SignedEvent<H>
where
    S: HasInternalAuth + Send + Sync,
    H: SignedHop,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        // Read under the route's body limit (an extension), then checked
        // and parsed from the same bytes. Read first: a body both too
        // large and not JSON is a 413, not a 415.
        let mut body_only = Request::new(body);
        *body_only.extensions_mut() = parts.extensions.clone();
        let body = Bytes::from_request(body_only, state)
            .await
            .map_err(|rejection| ApiError::from(JsonRejection::from(rejection)))?;
        let correlation = state
            .internal_auth()
            .verify(H::HOP, &parts.headers, &body)
            .map_err(|error| {
                tracing::warn!(%error, "internal request refused");
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    error.to_string(),
                )
            })?
            .to_owned();
        let request = Request::from_parts(parts, Body::from(body.clone()));
        let ApiJson(event) = ApiJson::<Event>::from_request(request, state).await?;
        event.validate()?;
        Ok(SignedEvent {
            correlation,
            event,
            body,
            hop: PhantomData,
        })
    }
}
