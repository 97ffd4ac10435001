//! The internal hops' authentication over HTTP: signing an outgoing
//! internal request, and [`SignedEvent`], the extractor that lets an
//! incoming one through only with a valid signature (see
//! [`crate::wire::signature`] for what is signed and why).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use super::error::ApiError;
use super::extract::ApiJson;
use crate::config::{self, ConfigError};
use crate::wire::signature::{self, Claimed, Hop, SignatureError};
use crate::wire::{CORRELATION_HEADER, Event, InternalSecret, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// How a service signs and checks its internal hops.
#[derive(Debug, Clone)]
pub struct InternalAuth {
    /// `None` only in the insecure development mode.
    secret: Option<InternalSecret>,
    /// How far a signature's timestamp may be from this service's clock
    /// (`SIGNATURE_TOLERANCE_MS`).
    tolerance: Duration,
}

impl InternalAuth {
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(30);

    pub fn new(secret: Option<InternalSecret>, tolerance: Duration) -> Self {
        Self { secret, tolerance }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            secret: InternalSecret::from_env()?,
            tolerance: config::millis_or(
                "SIGNATURE_TOLERANCE_MS",
                Self::DEFAULT_TOLERANCE.as_millis() as u64,
            )?,
        })
    }

    /// Whether internal hops are signed (false only in development mode).
    pub fn is_enforced(&self) -> bool {
        self.secret.is_some()
    }

    /// The headers that sign `body` about `correlation` on `hop`: the
    /// correlation id always, the timestamp and signature when a secret
    /// is configured.
    pub fn headers(&self, hop: Hop, correlation: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(CORRELATION_HEADER, header_value(correlation));
        if let Some(secret) = &self.secret {
            let now = signature::unix_now();
            headers.insert(TIMESTAMP_HEADER, HeaderValue::from(now));
            headers.insert(
                SIGNATURE_HEADER,
                header_value(&secret.sign(hop, now, correlation, body)),
            );
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
            signature: text(SIGNATURE_HEADER),
        };
        match &self.secret {
            Some(secret) => {
                secret.verify(hop, claimed, body, signature::unix_now(), self.tolerance)
            }
            None => signature::correlation(claimed.correlation),
        }
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
