use dispatcher::configuration::Config;
use dispatcher::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = common::telemetry::init(dispatcher::SERVICE_NAME);
    let config = Config::from_env()?;
    let app = Application::build(config).await?;
    let served = app.run(common::shutdown::on_signal()).await;
    telemetry.shutdown().await;
    Ok(served?)
}
