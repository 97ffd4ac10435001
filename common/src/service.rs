//! What every service's `main` does around its own work: telemetry set up
//! first and flushed last, and SIGTERM / SIGINT turned into a
//! [`CancellationToken`].
//!
//! Each service hands the token to its HTTP server and its AMQP tasks: the
//! server stops accepting and drains, consumers stop taking deliveries and
//! finish the ones they hold, connections close cleanly, and `run` returns.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// Runs the service `service_name`: `run` gets the token cancelled on the
/// first SIGTERM or SIGINT; whatever it returns, what telemetry has batched
/// is flushed before this returns it. Call it from `main`, inside the
/// Tokio runtime.
pub async fn run<F, Fut, E>(service_name: &str, run: F) -> Result<(), E>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let telemetry = telemetry::init(service_name);
    let ran = run(on_signal()).await;
    telemetry.shutdown().await;
    ran
}

/// A token cancelled on the first SIGTERM or SIGINT.
fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
