//! Runs prime-listener: reads its configuration, binds the health port and
//! consumes `prime-request` until SIGTERM / SIGINT.

use common::listener::{Listener, ListenerConfig};
use prime_listener::{DEFAULT_PORT, DEFAULT_QUEUE, PrimeConfig, PrimeHandler, SERVICE_NAME};

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::service::run(SERVICE_NAME, |shutdown| async {
        let config = ListenerConfig::from_env(SERVICE_NAME, DEFAULT_QUEUE, DEFAULT_PORT)?;
        let prime = PrimeConfig::from_env()?;
        tracing::info!(
            max_n = prime.max_n,
            workers = prime.workers,
            "prime settings"
        );
        let listener = Listener::bind(config, PrimeHandler::new(&prime)).await?;
        Ok(listener.run(shutdown).await?)
    })
    .await
}
