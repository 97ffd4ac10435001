use dispatcher::config::Config;
use dispatcher::startup::Application;

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::service::run(dispatcher::SERVICE_NAME, |shutdown| async {
        let app = Application::build(Config::from_env()?).await?;
        Ok(app.run(shutdown).await?)
    })
    .await
}
