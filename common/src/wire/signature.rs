//! Proof that an internal request comes from a peer service of this
//! deployment, made once and checked the same way on both internal hops.
//!
//! public-web's `POST /` to the dispatcher and the dispatcher's callback to
//! `/dispatch` each carry three headers: [`CORRELATION_HEADER`] (the parked
//! request the message is about), [`TIMESTAMP_HEADER`] (Unix milliseconds: two signatures of the same
//! content made apart, a retry's, differ) and
//! [`SIGNATURE_HEADER`]: `v1=<hex HMAC-SHA256>` of
//! `"<hop>\n<timestamp>\n<nonce>\n<correlation>\n<callback URL>\n" + body`
//! under the shared secret, where the nonce ([`NONCE_HEADER`]) is random
//! per message, so that no two messages share a signature (the callback URL is the request's
//! `x-callback-url` header, empty on a callback). The hop name
//! keeps a signed request from being replayed as a callback, the timestamp
//! bounds how long a captured message stays usable (the tolerance allows
//! for clock skew; a receiver also refuses a signature it has seen), the
//! callback URL cannot be swapped for another, and the correlation id
//! binds the signature to one parked request, which accepts one answer.
//!
//! The secret is required: a service without one refuses to start unless
//! [`crate::config::insecure_dev_mode`] is on.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::{self, ConfigError};

/// The parked request a message answers or asks about.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// When the message was signed, in Unix milliseconds.
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// Random per signed message, in hex.
pub const NONCE_HEADER: &str = "x-signature-nonce";

/// `v1=<hex HMAC-SHA256>` of the signed content.
pub const SIGNATURE_HEADER: &str = "x-signature";

const SCHEME: &str = "v1=";

/// The longest correlation id accepted; public-web makes 32 hex digits.
pub const MAX_CORRELATION_LEN: usize = 64;

/// Which internal hop a signature is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// public-web → dispatcher `POST /`.
    Submit,
    /// dispatcher → public-web `POST /dispatch`.
    Callback,
}

impl Hop {
    fn label(self) -> &'static str {
        match self {
            Hop::Submit => "submit",
            Hop::Callback => "callback",
        }
    }
}

/// Why an internal request's signature is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    #[error("the signature is {0} ms away from this service's clock, beyond the tolerance")]
    OutsideTolerance(u64),
    #[error("the signature does not match the shared secret and the content")]
    Mismatch,
    #[error("this signed message was received before")]
    Replayed,
}

/// The three headers of a signed message, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct Claimed<'a> {
    pub correlation: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// The callback URL the message names, if any: signed too.
    pub callback_url: Option<&'a str>,
}

/// What a signature covers besides the hop and the body.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// Unix milliseconds, in decimal.
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub correlation: &'a str,
    /// Empty when the message names none.
    pub callback_url: &'a str,
}

/// The secret every internal hop is signed with (`CALLBACK_SECRET`, or the
/// file `CALLBACK_SECRET_FILE` names), kept as the HMAC already keyed with
/// it: each signature starts from a copy instead of hashing the key again.
#[derive(Clone)]
pub struct InternalSecret(Arc<Hmac<Sha256>>);

impl std::fmt::Debug for InternalSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalSecret(***)")
    }
}

impl InternalSecret {
    /// Shorter secrets are refused at start: they can be guessed offline
    /// from one captured signature.
    pub const MIN_LEN: usize = 16;

    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(Arc::new(
            Hmac::<Sha256>::new_from_slice(secret.as_ref()).expect("HMAC takes keys of any length"),
        ))
    }

    /// The configured secret; `None` only in the insecure development
    /// mode. A missing or too short secret is an error otherwise.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let secret = match (
            config::var("CALLBACK_SECRET"),
            config::var("CALLBACK_SECRET_FILE"),
        ) {
            (Some(secret), _) => Some(secret),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|error| ConfigError::invalid("CALLBACK_SECRET_FILE", &path, error))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        match secret {
            Some(secret) if secret.len() >= Self::MIN_LEN => Ok(Some(Self::new(secret))),
            Some(_) => Err(ConfigError::at(
                "CALLBACK_SECRET",
                "",
                format!("shorter than {} bytes", Self::MIN_LEN),
            )),
            None if config::insecure_dev_mode()? => Ok(None),
            None => Err(ConfigError::at(
                "CALLBACK_SECRET",
                "",
                "unset: internal hops must be signed (set CALLBACK_SECRET or \
                 CALLBACK_SECRET_FILE, or INSECURE_DEV_MODE=true for a local experiment)",
            )),
        }
    }

    fn mac(&self, hop: Hop, signed: &Signed<'_>, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::clone(&self.0);
        let Signed {
            timestamp,
            nonce,
            correlation,
            callback_url,
        } = signed;
        for part in [hop.label(), timestamp, nonce, correlation, callback_url] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac.update(body);
        mac
    }

    /// The signature header value for `body` and `signed`.
    pub fn sign(&self, hop: Hop, signed: &Signed<'_>, body: &[u8]) -> String {
        let digest = self.mac(hop, signed, body).finalize().into_bytes();
        format!("{SCHEME}{}", hex::encode(digest))
    }

    /// Checks `claimed` against `body` at `now` (Unix milliseconds), in
    /// constant time; returns the correlation id it vouches for.
    pub fn verify<'a>(
        &self,
        hop: Hop,
        claimed: Claimed<'a>,
        body: &[u8],
        now: u64,
        tolerance: Duration,
    ) -> Result<&'a str, SignatureError> {
        let correlation = correlation(claimed.correlation)?;
        let timestamp = claimed
            .timestamp
            .ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
        let nonce = claimed.nonce.ok_or(SignatureError::Missing(NONCE_HEADER))?;
        let signed_at: u64 = timestamp
            .parse()
            .map_err(|_| SignatureError::Malformed(TIMESTAMP_HEADER))?;
        let expected = claimed
            .signature
            .ok_or(SignatureError::Missing(SIGNATURE_HEADER))?
            .strip_prefix(SCHEME)
            .and_then(|digest| hex::decode(digest).ok())
            .ok_or(SignatureError::Malformed(SIGNATURE_HEADER))?;
        let signed = Signed {
            timestamp,
            nonce,
            correlation,
            callback_url: claimed.callback_url.unwrap_or_default(),
        };
        self.mac(hop, &signed, body)
            .verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)?;
        // Checked after the MAC, so an unsigned probe learns nothing about
        // this service's clock.
        let skew = now.abs_diff(signed_at);
        if u128::from(skew) > tolerance.as_millis() {
            return Err(SignatureError::OutsideTolerance(skew));
        }
        Ok(correlation)
    }
}

/// A correlation id as a header carries it: printable ASCII without
/// separators, at most [`MAX_CORRELATION_LEN`] bytes.
pub fn correlation(value: Option<&str>) -> Result<&str, SignatureError> {
    let value = value.ok_or(SignatureError::Missing(CORRELATION_HEADER))?;
    let well_formed = !value.is_empty()
        && value.len() <= MAX_CORRELATION_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed
        .then_some(value)
        .ok_or(SignatureError::Malformed(CORRELATION_HEADER))
}

/// Now, in Unix milliseconds, as signatures count time.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: Duration = Duration::from_secs(30);
    const BODY: &[u8] = br#"{"id":"1","type":"PingResponse"}"#;

    fn claimed<'a>(correlation: &'a str, timestamp: &'a str, signature: &'a str) -> Claimed<'a> {
        Claimed {
            correlation: Some(correlation),
            timestamp: Some(timestamp),
            nonce: Some("n0"),
            signature: Some(signature),
            callback_url: None,
        }
    }

    fn signed<'a>(correlation: &'a str, timestamp: &'a str) -> Signed<'a> {
        Signed {
            timestamp,
            nonce: "n0",
            correlation,
            callback_url: "",
        }
    }

    #[test]
    fn a_signature_verifies_its_hop_time_correlation_body_and_secret() {
        let secret = InternalSecret::new("0123456789abcdef");
        let signature = secret.sign(Hop::Callback, &signed("c0ffee", "1000000"), BODY);
        assert!(signature.starts_with("v1="));
        let ok = claimed("c0ffee", "1000000", &signature);
        assert_eq!(
            secret.verify(Hop::Callback, ok, BODY, 1_010_000, TOLERANCE),
            Ok("c0ffee")
        );
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(
            secret.verify(Hop::Submit, ok, BODY, 1_010_000, TOLERANCE),
            mismatch
        );
        assert_eq!(
            secret.verify(Hop::Callback, ok, b"{}", 1_010_000, TOLERANCE),
            mismatch
        );
        let other_id = claimed("c0ffef", "1000000", &signature);
        assert_eq!(
            secret.verify(Hop::Callback, other_id, BODY, 1_010_000, TOLERANCE),
            mismatch
        );
        let other_time = claimed("c0ffee", "1000001", &signature);
        assert_eq!(
            secret.verify(Hop::Callback, other_time, BODY, 1_010_000, TOLERANCE),
            mismatch
        );
        let other_nonce = Claimed {
            nonce: Some("n1"),
            ..ok
        };
        assert_eq!(
            secret.verify(Hop::Callback, other_nonce, BODY, 1_010_000, TOLERANCE),
            mismatch
        );
        let other_callback = Claimed {
            callback_url: Some("http://elsewhere/dispatch"),
            ..ok
        };
        assert_eq!(
            secret.verify(Hop::Callback, other_callback, BODY, 1_010_000, TOLERANCE),
            mismatch
        );
        assert_eq!(
            InternalSecret::new("another secret!!").verify(
                Hop::Callback,
                ok,
                BODY,
                1_010_000,
                TOLERANCE
            ),
            mismatch
        );
    }

    #[test]
    fn old_or_future_signatures_are_refused() {
        let secret = InternalSecret::new("0123456789abcdef");
        let signature = secret.sign(Hop::Submit, &signed("c", "1000000"), BODY);
        let claim = claimed("c", "1000000", &signature);
        for now in [1_031_000, 969_000] {
            assert_eq!(
                secret.verify(Hop::Submit, claim, BODY, now, TOLERANCE),
                Err(SignatureError::OutsideTolerance(31_000))
            );
        }
    }

    #[test]
    fn missing_or_malformed_headers_are_named() {
        let secret = InternalSecret::new("0123456789abcdef");
        let verify = |claim| secret.verify(Hop::Submit, claim, BODY, 1_000_000, TOLERANCE);
        let too_long = "a".repeat(65);
        assert_eq!(
            verify(Claimed::default()),
            Err(SignatureError::Missing(CORRELATION_HEADER))
        );
        assert_eq!(
            verify(claimed("a\nb", "1000000", "v1=00")),
            Err(SignatureError::Malformed(CORRELATION_HEADER))
        );
        assert_eq!(
            verify(claimed(&too_long, "1000000", "v1=00")),
            Err(SignatureError::Malformed(CORRELATION_HEADER))
        );
        assert_eq!(
            verify(claimed("a", "soon", "v1=00")),
            Err(SignatureError::Malformed(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(claimed("a", "1000000", "sha256=00")),
            Err(SignatureError::Malformed(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify(claimed("a", "1000000", "v1=zz")),
            Err(SignatureError::Malformed(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert_eq!(
            format!("{:?}", InternalSecret::new("s3cret")),
            "InternalSecret(***)"
        );
    }
}
