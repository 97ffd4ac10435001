use webhook_sender::config::Config;
use webhook_sender::startup::Application;

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::service::run(webhook_sender::SERVICE_NAME, |shutdown| async {
        let app = Application::build(Config::from_env()?).await?;
        Ok(app.run(shutdown).await?)
    })
    .await
}
