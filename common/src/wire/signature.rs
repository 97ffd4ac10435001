//! Proof that a `/dispatch` callback comes from a dispatcher.
//!
//! public-web and the dispatcher share `CALLBACK_SECRET`. The dispatcher
//! sends `x-callback-signature: sha256=<hex HMAC-SHA256 of the body>`;
//! public-web recomputes it and compares in constant time. Without it,
//! anyone who can reach `/dispatch` could answer other clients' requests.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const SCHEME: &str = "sha256=";

/// The shared secret.
#[derive(Clone)]
pub struct CallbackSecret(Arc<[u8]>);

impl std::fmt::Debug for CallbackSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackSecret(***)")
    }
}

impl CallbackSecret {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().into())
    }

    /// `CALLBACK_SECRET`, if set.
    pub fn from_env() -> Option<Self> {
        crate::config::var("CALLBACK_SECRET").map(Self::new)
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// The signature header value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        format!("{SCHEME}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `signature` (the header value) signs `body`.
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> bool {
        let Some(expected) = signature
            .and_then(|s| s.strip_prefix(SCHEME))
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
        else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_body_and_secret() {
        let secret = CallbackSecret::new("s3cret");
        let signature = secret.sign(b"{\"id\":\"1\"}");
        assert!(signature.starts_with("sha256="));
        assert!(secret.verify(b"{\"id\":\"1\"}", Some(&signature)));
        assert!(!secret.verify(b"{\"id\":\"2\"}", Some(&signature)));
        assert!(!CallbackSecret::new("other").verify(b"{\"id\":\"1\"}", Some(&signature)));
        assert!(!secret.verify(b"{\"id\":\"1\"}", None));
        assert!(!secret.verify(b"{\"id\":\"1\"}", Some("sha256=zz")));
        assert!(!secret.verify(b"{\"id\":\"1\"}", Some(&signature[7..])));
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert_eq!(
            format!("{:?}", CallbackSecret::new("s3cret")),
            "CallbackSecret(***)"
        );
    }
}
