//! Reading configuration from environment variables (12-factor).
//!
//! Every service builds its `Config` from these helpers so that a missing
//! variable falls back to a default that works for a local run, and a present
//! but malformed one stops the service with a message naming the variable,
//! instead of being silently ignored.

use std::str::FromStr;
use std::time::Duration;

/// A configuration variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(name: &str, value: &str, reason: impl ToString) -> Self {
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// The variable's value, or `None` when it is unset or empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The variable parsed as `T`, or `default` when it is unset.
pub fn parse_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|e| ConfigError::new(name, &value, e)),
    }
}

/// A duration given in milliseconds, as `*_MS` variables are.
pub fn millis_or(name: &str, default_ms: u64) -> Result<Duration, ConfigError> {
    parse_or(name, default_ms).map(Duration::from_millis)
}

/// The string variable, or `default` when it is unset.
pub fn string_or(name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

/// The default broker: the local RabbitMQ with its guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker URL from `AMQP_URL`.
pub fn amqp_url() -> String {
    string_or("AMQP_URL", DEFAULT_AMQP_URL)
}

/// The URL with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn malformed_value_names_the_variable() {
        // A name no other test uses, so setting it cannot race.
        unsafe { std::env::set_var("COMMON_TEST_BAD_NUMBER", "ten") };
        let err = parse_or("COMMON_TEST_BAD_NUMBER", 10u32).unwrap_err();
        assert!(err.to_string().contains("COMMON_TEST_BAD_NUMBER"));
    }
}
