//! Runs prime-listener: reads its configuration, binds the health port and
//! consumes `prime-request` until SIGTERM / SIGINT.

use common::listener::{Listener, ListenerConfig};
use prime_listener::{PrimeConfig, PrimeHandler};

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = common::telemetry::init(prime_listener::SERVICE_NAME);
    let config = ListenerConfig::from_env(
        prime_listener::SERVICE_NAME,
        prime_listener::DEFAULT_QUEUE,
        prime_listener::DEFAULT_PORT,
    )?;
    let prime = PrimeConfig::from_env()?;
    tracing::info!(
        max_n = prime.max_n,
        workers = prime.workers,
        "prime settings"
    );
    let listener = Listener::bind(config, PrimeHandler::new(&prime)).await?;
    tracing::info!(addr = %listener.local_addr(), "health endpoint listening");
    let ran = listener.run(common::shutdown::on_signal()).await;
    telemetry.shutdown().await;
    Ok(ran?)
}
