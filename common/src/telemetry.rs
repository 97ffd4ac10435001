//! Logging setup shared by every binary.
//!
//! Logs go to stdout, human-readable by default and one JSON object per line
//! with `LOG_FORMAT=json`; `RUST_LOG` filters them (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service_name: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::var("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    tracing::info!(service = service_name, "starting");
}
