//! Development subscriber tokens: what public-web's subscriptions accept
//! when signed with its HS256 key (`SUBSCRIBE_JWT_HS256_KEY`), minted here
//! so a developer can watch the stream without an identity provider.
//!
//! Production tokens come from wherever the deployment's identity lives;
//! this only holds the key a developer's own public-web was started with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The variable holding public-web's HS256 key, read here too.
pub const KEY_VAR: &str = "SUBSCRIBE_JWT_HS256_KEY";

/// What a minted token grants and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub ttl: Duration,
    /// The `event_types` claim (exact types or prefixes ending in `*`);
    /// `None` grants every type.
    pub event_types: Option<Vec<String>>,
    /// `aud` and `iss`, when public-web checks them.
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    exp: u64,
    iat: u64,
    sub: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_types: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// A token for `request`, signed HS256 with `key`.
pub fn mint(key: &[u8], request: &TokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let claims = Claims {
        exp: now + request.ttl.as_secs().max(1),
        iat: now,
        sub: "req-development",
        event_types: request.event_types.as_deref(),
        aud: request.audience.as_deref(),
        iss: request.issuer.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
}

/// [`mint`] with the key, audience and issuer public-web reads from the
/// environment; `None` when no key is set.
pub fn mint_from_env(
    ttl: Duration,
    event_types: Option<Vec<String>>,
) -> Option<Result<String, jsonwebtoken::errors::Error>> {
    let key = std::env::var(KEY_VAR).ok().filter(|key| !key.is_empty())?;
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let request = TokenRequest {
        ttl,
        event_types,
        audience: var("SUBSCRIBE_TOKEN_AUDIENCE"),
        issuer: var("SUBSCRIBE_TOKEN_ISSUER"),
    };
    Some(mint(key.as_bytes(), &request))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::Value;

    use super::*;

    const KEY: &[u8] = b"a development key of at least 32 bytes";

    fn decode(token: &str, audience: Option<&str>) -> Value {
        let mut validation = Validation::new(Algorithm::HS256);
        match audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(KEY), &validation)
            .expect("a valid token")
            .claims
    }

    #[test]
    fn a_minted_token_verifies_and_expires_after_its_ttl() {
        let request = TokenRequest {
            ttl: Duration::from_secs(600),
            event_types: Some(vec!["PingResponse".to_owned(), "Order*".to_owned()]),
            audience: Some("public-web".to_owned()),
            issuer: None,
        };
        let claims = decode(&mint(KEY, &request).unwrap(), Some("public-web"));
        let (exp, iat) = (
            claims["exp"].as_u64().unwrap(),
            claims["iat"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 600);
        assert_eq!(claims["event_types"][1], "Order*");
        assert!(claims.get("iss").is_none());
    }

    #[test]
    fn no_types_grants_every_type() {
        let request = TokenRequest {
            ttl: Duration::from_secs(60),
            event_types: None,
            audience: None,
            issuer: None,
        };
        let claims = decode(&mint(KEY, &request).unwrap(), None);
        assert!(claims.get("event_types").is_none());
    }
}
