//! Reading configuration from environment variables (12-factor).
//!
//! Every service builds its `Config` from these helpers, once, at start:
//! a missing variable falls back to a default that works for a local run,
//! and a present but malformed one stops the service with a
//! [`ConfigError`] naming the variable, instead of being silently ignored
//! or failing later at first use.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;

/// A configuration variable that is set but cannot be used; the one error
/// type of every service's configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The variable, with its value or the file it names:
    /// `PORT="abc"`, `SCENARIO_CONFIG (examples/order.yaml)`.
    origin: String,
    /// Where inside a structured value, when it is one
    /// (`handlers.OrderRequest.steps[2]`).
    path: Option<String>,
    reason: String,
}

impl ConfigError {
    /// `name` is set to `value`, which is unusable for `reason`.
    pub fn invalid(name: &str, value: &str, reason: impl fmt::Display) -> Self {
        Self {
            origin: format!("{name}={value:?}"),
            path: None,
            reason: reason.to_string(),
        }
    }

    /// `origin` (a variable, or a variable and the file it names) is
    /// unusable for `reason`, at `path` inside it when that is not empty.
    pub fn at(
        origin: impl Into<String>,
        path: impl Into<String>,
        reason: impl fmt::Display,
    ) -> Self {
        let path = path.into();
        Self {
            origin: origin.into(),
            path: (!path.is_empty()).then_some(path),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}: {}", self.origin, path, self.reason),
            None => write!(f, "{}: {}", self.origin, self.reason),
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
    T::Err: fmt::Display,
{
    parse(name).map(|value| value.unwrap_or(default))
}

/// The variable parsed as `T`, or `None` when it is unset.
pub fn parse<T>(name: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    var(name)
        .map(|value| {
            value
                .trim()
                .parse()
                .map_err(|e| ConfigError::invalid(name, &value, e))
        })
        .transpose()
}

/// A duration given in milliseconds, as `*_MS` variables are.
pub fn millis_or(name: &str, default_ms: u64) -> Result<Duration, ConfigError> {
    parse_or(name, default_ms).map(Duration::from_millis)
}

/// `INSECURE_DEV_MODE=true`: a local experiment may run without the
/// internal secret and the callback allow-list. Every service that uses it
/// says so loudly at start; never set it in a deployment.
pub fn insecure_dev_mode() -> Result<bool, ConfigError> {
    parse_or("INSECURE_DEV_MODE", false)
}

/// The address internal listeners bind (`INTERNAL_BIND_ADDR`): loopback
/// unless the deployment says otherwise, so an internal endpoint is never
/// reachable from outside by accident.
pub fn internal_bind_addr() -> Result<IpAddr, ConfigError> {
    parse_or("INTERNAL_BIND_ADDR", IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The string variable, or `default` when it is unset.
pub fn string_or(name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

/// An http(s) URL, or `default` when the variable is unset.
pub fn http_url_or(name: &str, default: &str) -> Result<Url, ConfigError> {
    http_url(name).map(|url| url.unwrap_or_else(|| default.parse().expect("a valid default")))
}

/// An http(s) URL, or `None` when the variable is unset. An unusable
/// one is quoted in the error with any userinfo hidden.
pub fn http_url(name: &str) -> Result<Option<Url>, ConfigError> {
    let Some(text) = var(name) else {
        return Ok(None);
    };
    let refuse = |reason: &dyn fmt::Display| {
        ConfigError::invalid(name, &without_userinfo(text.trim()), reason)
    };
    let url = Url::parse(text.trim()).map_err(|e| refuse(&e))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(&"not an http(s) URL"));
    }
    Ok(Some(url))
}

/// `url` with whatever stands before an `@` in its authority replaced by
/// `***`, for error messages.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => {
            let separator = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{separator}***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test uses variable names no other test uses, so setting them
    // cannot race.

    #[test]
    fn malformed_value_names_the_variable() {
        unsafe { std::env::set_var("COMMON_TEST_BAD_NUMBER", "ten") };
        let err = parse_or("COMMON_TEST_BAD_NUMBER", 10u32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "COMMON_TEST_BAD_NUMBER=\"ten\": invalid digit found in string"
        );
    }

    #[test]
    fn urls_must_be_http() {
        unsafe { std::env::set_var("COMMON_TEST_FTP_URL", "ftp://host/") };
        let err = http_url("COMMON_TEST_FTP_URL").unwrap_err();
        assert!(err.to_string().contains("not an http(s) URL"), "{err}");
        assert_eq!(
            http_url_or("COMMON_TEST_UNSET_URL", "http://127.0.0.1:3001")
                .unwrap()
                .port(),
            Some(3001)
        );
    }

    #[test]
    fn userinfo_is_not_quoted() {
        unsafe { std::env::set_var("COMMON_TEST_FTP_SECRET", "ftp://me:hunter2@host/x") };
        let err = http_url("COMMON_TEST_FTP_SECRET").unwrap_err().to_string();
        assert!(err.contains("ftp://***@host/x"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(without_userinfo("http://host:1/p"), "http://host:1/p");
    }

    #[test]
    fn a_place_inside_a_value_is_named() {
        let err = ConfigError::at("SCENARIO_CONFIG (x.yaml)", "handlers.A", "bad");
        assert_eq!(err.to_string(), "SCENARIO_CONFIG (x.yaml): handlers.A: bad");
        let err = ConfigError::at("SCENARIO_CONFIG", "", "not set");
        assert_eq!(err.to_string(), "SCENARIO_CONFIG: not set");
    }
}
