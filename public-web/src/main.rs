use public_web::config::Config;
use public_web::startup::Application;

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::service::run(public_web::SERVICE_NAME, |shutdown| async {
        let app = Application::build(Config::from_env()?).await?;
        Ok(app.run(shutdown).await?)
    })
    .await
}
