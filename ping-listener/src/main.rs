use common::listener::{Listener, ListenerConfig};
use ping_listener::{DEFAULT_PORT, DEFAULT_QUEUE, SERVICE_NAME};

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::service::run(SERVICE_NAME, |shutdown| async {
        let config = ListenerConfig::from_env(SERVICE_NAME, DEFAULT_QUEUE, DEFAULT_PORT)?;
        let listener = Listener::bind(config, ping_listener::handle).await?;
        Ok(listener.run(shutdown).await?)
    })
    .await
}
