use common::listener::{Listener, ListenerConfig};

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = common::telemetry::init(ping_listener::SERVICE_NAME);
    let config = ListenerConfig::from_env(
        ping_listener::SERVICE_NAME,
        ping_listener::DEFAULT_QUEUE,
        ping_listener::DEFAULT_PORT,
    )?;
    let listener = Listener::bind(config, ping_listener::handle).await?;
    tracing::info!(addr = %listener.local_addr(), "health endpoint listening");
    let ran = listener.run(common::shutdown::on_signal()).await;
    telemetry.shutdown().await;
    Ok(ran?)
}
