//! Who may subscribe to what: a bearer JWT whose claims bound the filters
//! a subscription may use.
//!
//! The event stream carries every client's events, so a subscription
//! needs a token signed with the configured key: HS256 with a shared
//! secret (`SUBSCRIBE_JWT_HS256_KEY`) or ES256 with a public key
//! (`SUBSCRIBE_JWT_ES256_PUBLIC_KEY`, PEM). Each key accepts only its own
//! algorithm, so a token cannot choose how it is checked. `exp` is
//! required; `nbf`, and `aud`/`iss` when configured, are checked.
//!
//! Two claims bound a subscription; a token without them may subscribe to
//! anything:
//! - `event_types`: the event types it may see, each exact or a prefix
//!   ending in `*` (`["PingResponse", "Order*"]`);
//! - `event_data`: fields of `data` the events must have, with their
//!   values (`{"tenant": "acme"}`).
//!
//! A subscription is inside the claims when its filters (all of which
//! must match) imply them: for `event_types`, one of its filters admits
//! only allowed types (`exact` or `prefix` on `type`, or an `any` of such
//! filters, or an `all` holding one); for `event_data`, one of its filters
//! requires the field to equal the value. Anything else is refused with
//! 403 naming the claim: the check is conservative, never permissive.
//!
//! Anonymous subscriptions (`SUBSCRIBE_ANONYMOUS=true`) skip all of this,
//! for development only.

use std::collections::BTreeMap;

use common::config::{self, ConfigError};
use common::filter::{Attribute, Filter, Filters};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// What a valid token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Grant {
    /// Types it may see (exact, or a prefix ending in `*`); `None`: any.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Data fields the events must have, with their values.
    #[serde(default)]
    pub event_data: BTreeMap<String, String>,
    /// When the token expires (Unix seconds).
    pub exp: u64,
}

/// Why a subscription is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required to subscribe")]
    Missing,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the subscription is outside the token's claim {claim:?}: {reason}")]
    OutsideClaim { claim: &'static str, reason: String },
}

/// A key tokens are checked with, and the only algorithm it accepts.
#[derive(Clone)]
pub struct Key {
    decoding: DecodingKey,
    validation: Validation,
}

impl Key {
    /// An HS256 shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// An ES256 (P-256) public key, in PEM.
    pub fn es256_pem(pem: &[u8]) -> jsonwebtoken::errors::Result<Self> {
        Ok(Self::new(DecodingKey::from_ec_pem(pem)?, Algorithm::ES256))
    }

    fn new(decoding: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.validate_aud = false;
        Self {
            decoding,
            validation,
        }
    }

    /// Requires `aud` to name `audience`.
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self
    }

    /// Requires `iss` to be `issuer`.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self
    }
}

/// Checks tokens and the subscriptions they allow.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<Key>,
    anonymous: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Verifier {
    /// Tokens checked with `keys`; no token needed when `anonymous`.
    pub fn new(keys: Vec<Key>, anonymous: bool) -> Self {
        Self { keys, anonymous }
    }

    /// The verifier the environment configures.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        if let Some(secret) = config::var("SUBSCRIBE_JWT_HS256_KEY") {
            if secret.len() < 32 {
                return Err(ConfigError::at(
                    "SUBSCRIBE_JWT_HS256_KEY",
                    "",
                    "shorter than 32 bytes: too easy to guess",
                ));
            }
            keys.push(Key::hs256(secret.as_bytes()));
        }
        if let Some(pem) = config::var("SUBSCRIBE_JWT_ES256_PUBLIC_KEY") {
            let key = Key::es256_pem(pem.as_bytes()).map_err(|error| {
                ConfigError::at(
                    "SUBSCRIBE_JWT_ES256_PUBLIC_KEY",
                    "",
                    format!("not a PEM EC public key: {error}"),
                )
            })?;
            keys.push(key);
        }
        let audience = config::var("SUBSCRIBE_TOKEN_AUDIENCE");
        let issuer = config::var("SUBSCRIBE_TOKEN_ISSUER");
        let keys = keys
            .into_iter()
            .map(|key| match &audience {
                Some(audience) => key.with_audience(audience),
                None => key,
            })
            .map(|key| match &issuer {
                Some(issuer) => key.with_issuer(issuer),
                None => key,
            })
            .collect();
        Ok(Self::new(
            keys,
            config::parse_or("SUBSCRIBE_ANONYMOUS", false)?,
        ))
    }

    /// Whether subscriptions without a token are allowed.
    pub fn anonymous(&self) -> bool {
        self.anonymous
    }

    /// What `token` grants; with no token, everything when anonymous
    /// subscriptions are on. A present token is always checked.
    pub fn grant(&self, token: Option<&str>) -> Result<Option<Grant>, AuthError> {
        let Some(token) = token else {
            return if self.anonymous {
                Ok(None)
            } else {
                Err(AuthError::Missing)
            };
        };
        let mut last = AuthError::Invalid("no key to check it with is configured".into());
        for key in &self.keys {
            match jsonwebtoken::decode::<Grant>(token, &key.decoding, &key.validation) {
                Ok(data) => return Ok(Some(data.claims)),
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match error.kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                            AuthError::Invalid("bad signature".into())
                        }
                        _ => AuthError::Invalid(error.to_string()),
                    };
                    if last == AuthError::Expired {
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

impl Grant {
    /// When the token runs out, as an instant of this process's clock.
    pub fn expires_at(&self) -> tokio::time::Instant {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let left = self.exp.saturating_sub(now).min(u64::from(u32::MAX));
        tokio::time::Instant::now() + std::time::Duration::from_secs(left)
    }

    /// Refuses `filters` unless they imply every claim.
    pub fn allows(&self, filters: &Filters) -> Result<(), AuthError> {
        if let Some(types) = &self.event_types
            && !filters.0.iter().any(|f| only_types(f, types))
        {
            return Err(AuthError::OutsideClaim {
                claim: "event_types",
                reason: format!(
                    "add a filter that admits only the types {types:?} \
                     (exact or prefix on type)"
                ),
            });
        }
        for (field, value) in &self.event_data {
            if !filters.0.iter().any(|f| requires(f, field, value)) {
                return Err(AuthError::OutsideClaim {
                    claim: "event_data",
                    reason: format!(
                        "add the filter {{\"exact\": {{\"data.{field}\": {value:?}}}}}"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Whether every event `filter` admits has a type among `types`.
fn only_types(filter: &Filter, types: &[String]) -> bool {
    match filter {
        Filter::Exact(Attribute::Type, kind) => {
            types.iter().any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => kind.starts_with(prefix),
                None => allowed == kind,
            })
        }
        Filter::Prefix(Attribute::Type, start) => types.iter().any(|allowed| {
            allowed
                .strip_suffix('*')
                .is_some_and(|prefix| start.starts_with(prefix))
        }),
        Filter::All(filters) => filters.iter().any(|f| only_types(f, types)),
        Filter::Any(filters) => filters.iter().all(|f| only_types(f, types)),
        _ => false,
    }
}

/// Whether every event `filter` admits has `data.<field>` equal to `value`.
fn requires(filter: &Filter, field: &str, value: &str) -> bool {
    match filter {
        Filter::Exact(Attribute::Data(name), required) => name == field && required == value,
        Filter::All(filters) => filters.iter().any(|f| requires(f, field, value)),
        Filter::Any(filters) => filters.iter().all(|f| requires(f, field, value)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filters(value: serde_json::Value) -> Filters {
        Filters::parse(&value).unwrap()
    }

    fn grant(types: Option<&[&str]>, data: &[(&str, &str)]) -> Grant {
        Grant {
            event_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            event_data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exp: u64::MAX,
        }
    }

    #[test]
    fn types_are_implied_by_exact_prefix_any_and_all() {
        let grant = grant(Some(&["PingResponse", "Order*"]), &[]);
        for inside in [
            json!([{"exact": {"type": "PingResponse"}}]),
            json!([{"exact": {"type": "OrderCreated"}}]),
            json!([{"prefix": {"type": "OrderC"}}]),
            json!([{"prefix": {"type": "Order"}}]),
            json!([{"any": [{"exact": {"type": "PingResponse"}}, {"prefix": {"type": "Order"}}]}]),
            json!([{"all": [{"exact": {"direction": "response"}}, {"exact": {"type": "PingResponse"}}]}]),
            json!([{"exact": {"source": "x"}}, {"exact": {"type": "PingResponse"}}]),
        ] {
            assert_eq!(grant.allows(&filters(inside.clone())), Ok(()), "{inside}");
        }
        for outside in [
            json!([]),
            json!([{"exact": {"type": "PingRequest"}}]),
            json!([{"prefix": {"type": "Ord"}}]),
            json!([{"prefix": {"type": "Ping"}}]),
            json!([{"not": {"exact": {"type": "PingRequest"}}}]),
            json!([{"any": [{"exact": {"type": "PingResponse"}}, {"exact": {"source": "x"}}]}]),
            json!([{"suffix": {"type": "Response"}}]),
        ] {
            let refused = grant.allows(&filters(outside.clone())).unwrap_err();
            assert!(
                matches!(
                    refused,
                    AuthError::OutsideClaim {
                        claim: "event_types",
                        ..
                    }
                ),
                "{outside}"
            );
        }
    }

    #[test]
    fn data_claims_need_the_exact_field() {
        let grant = grant(None, &[("tenant", "acme")]);
        assert_eq!(
            grant.allows(&filters(json!([{"exact": {"data.tenant": "acme"}}]))),
            Ok(())
        );
        for outside in [
            json!([{"exact": {"data.tenant": "other"}}]),
            json!([{"prefix": {"data.tenant": "acme"}}]),
            json!([{"any": [{"exact": {"data.tenant": "acme"}}, {"exact": {"type": "T"}}]}]),
            json!([{"exact": {"type": "T"}}]),
        ] {
            let refused = grant.allows(&filters(outside.clone())).unwrap_err();
            assert!(
                matches!(
                    refused,
                    AuthError::OutsideClaim {
                        claim: "event_data",
                        ..
                    }
                ),
                "{outside}"
            );
        }
    }

    #[test]
    fn a_grant_without_claims_allows_anything() {
        assert_eq!(grant(None, &[]).allows(&filters(json!([]))), Ok(()));
    }
}
