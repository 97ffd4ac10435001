//! Webhook signatures as the Standard Webhooks specification defines them,
//! for the webhook-sender that signs deliveries and for Rust receivers that
//! verify them.
//!
//! A delivery carries three headers: [`ID_HEADER`] (the message id, the
//! same on every retry so a receiver can de-duplicate), [`TIMESTAMP_HEADER`]
//! (Unix seconds of this attempt) and [`SIGNATURE_HEADER`]: space-separated
//! `v1,<base64 HMAC-SHA256>` of `"{id}.{timestamp}.{body}"`, one per
//! secret in use (two while a secret is being rotated). A secret is 32
//! random bytes, written `whsec_<base64>`.
//!
//! A [`Verifier`] accepts a delivery when its timestamp is within the
//! tolerance of the receiver's clock (replays of old deliveries fail) and
//! one of its signatures matches one of the receiver's secrets, compared in
//! constant time.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use rand::RngCore;
use sha2::Sha256;

/// The message id, the same for every attempt of one delivery.
pub const ID_HEADER: &str = "webhook-id";
/// When this attempt was signed, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Space-separated `v1,<base64 signature>`.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// How a secret is written.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a delivery's timestamp may be from the receiver's clock, by
/// default (the specification's suggestion).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

const VERSION: &str = "v1";
const SECRET_BYTES: usize = 32;

/// A signing secret. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// A secret that is not `whsec_` followed by base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is \"whsec_\" followed by base64")]
pub struct SecretParseError;

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut key = vec![0; SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// The key bytes (what is stored).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(key: Vec<u8>) -> Self {
        Self(key)
    }

    /// The `v1,<base64>` signature of `body` sent as `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("{VERSION},{}", STANDARD.encode(mac))
    }

    /// Whether `signature` (decoded) is this secret's, in constant time.
    fn matches(&self, id: &str, timestamp: i64, body: &[u8], signature: &[u8]) -> bool {
        self.mac(id, timestamp, body)
            .verify_slice(signature)
            .is_ok()
    }

    /// The HMAC of the signed content, `"{id}.{timestamp}.{body}"`.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = SecretParseError;

    /// `whsec_<base64>`; the bare base64 is accepted too, as the reference
    /// libraries do.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = STANDARD.decode(encoded).map_err(|_| SecretParseError)?;
        if key.is_empty() {
            return Err(SecretParseError);
        }
        Ok(Self(key))
    }
}

/// The `webhook-signature` value for `body` under every secret in
/// `secrets` (the current one, and the previous one during a rotation).
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unix seconds now.
pub fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing or not text")]
    MissingHeader(&'static str),
    #[error("the webhook-timestamp header is not a number of seconds")]
    BadTimestamp,
    #[error("the timestamp is outside the tolerance (too old or too new)")]
    OutsideTolerance,
    #[error("no signature matches")]
    NoMatch,
}

/// Checks deliveries against the receiver's secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance: Duration,
}

impl Verifier {
    pub fn new(secrets: Vec<Secret>) -> Self {
        Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Whether `body` with `headers` is a delivery signed with one of the
    /// secrets, within the tolerance of `now` (Unix seconds).
    pub fn verify_at(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .ok_or(VerifyError::MissingHeader(name))
        };
        let id = header(ID_HEADER)?;
        let timestamp: i64 = header(TIMESTAMP_HEADER)?
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        if timestamp.abs_diff(now) > tolerance.unsigned_abs() {
            return Err(VerifyError::OutsideTolerance);
        }
        let signatures = header(SIGNATURE_HEADER)?;
        let matched = signatures
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == VERSION)
            .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
            .any(|signature| {
                self.secrets
                    .iter()
                    .any(|secret| secret.matches(id, timestamp, body, &signature))
            });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::NoMatch)
        }
    }

    /// [`verify_at`](Self::verify_at) with this machine's clock.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, now_seconds())
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// The specification's own example: this secret, id, timestamp and
    /// body sign to this value.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ID_HEADER, HeaderValue::from_str(id).unwrap());
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        headers
    }

    #[test]
    fn signs_the_specification_example() {
        let secret: Secret = SPEC_SECRET.parse().unwrap();
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        assert_eq!(secret.to_string(), SPEC_SECRET);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn verifies_a_signature_within_the_tolerance_only() {
        let verifier = Verifier::new(vec![SPEC_SECRET.parse().unwrap()]);
        let signed = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE);
        assert_eq!(
            verifier.verify_at(&signed, SPEC_BODY.as_bytes(), SPEC_TIMESTAMP + 299),
            Ok(())
        );
        assert_eq!(
            verifier.verify_at(&signed, SPEC_BODY.as_bytes(), SPEC_TIMESTAMP + 301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            verifier.verify_at(&signed, SPEC_BODY.as_bytes(), SPEC_TIMESTAMP - 301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            verifier.verify_at(&signed, b"{\"test\": 1}", SPEC_TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        let other_id = headers("msg_other", SPEC_TIMESTAMP, SPEC_SIGNATURE);
        assert_eq!(
            verifier.verify_at(&other_id, SPEC_BODY.as_bytes(), SPEC_TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        let mut missing = signed.clone();
        missing.remove(SIGNATURE_HEADER);
        assert_eq!(
            verifier.verify_at(&missing, SPEC_BODY.as_bytes(), SPEC_TIMESTAMP),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let (old, new) = (Secret::generate(), Secret::generate());
        assert_ne!(old, new);
        let now = now_seconds();
        let header = signature_header(&[&new, &old], "msg_1", now, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        let signed = headers("msg_1", now, &header);
        for secret in [&old, &new] {
            let verifier = Verifier::new(vec![secret.clone()]);
            assert_eq!(verifier.verify(&signed, b"{}"), Ok(()));
        }
        let stranger = Verifier::new(vec![Secret::generate()]);
        assert_eq!(stranger.verify(&signed, b"{}"), Err(VerifyError::NoMatch));
    }

    #[test]
    fn secrets_round_trip_and_refuse_garbage() {
        let secret = Secret::generate();
        assert_eq!(secret.as_bytes().len(), 32);
        assert_eq!(secret.to_string().parse::<Secret>().unwrap(), secret);
        assert!("whsec_not base64!".parse::<Secret>().is_err());
        assert!("whsec_".parse::<Secret>().is_err());
    }
}
