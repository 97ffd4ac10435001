use dispatcher::config::Config;
use dispatcher::startup::Application;

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = common::telemetry::init(dispatcher::SERVICE_NAME);
    let config = Config::from_env()?;
    let app = Application::build(config).await?;
    let served = app.run(common::shutdown::on_signal()).await;
    telemetry.shutdown().await;
    Ok(served?)
}
