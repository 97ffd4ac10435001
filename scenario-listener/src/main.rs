//! Runs scenario-listener: loads the scenario (refusing to start when it
//! is invalid, naming the place in it), binds the health port and consumes
//! `scenario-request` until SIGTERM / SIGINT.

use common::listener::{Listener, ListenerConfig};
use scenario_listener::{Scenario, ScenarioConfig};

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = common::telemetry::init(scenario_listener::SERVICE_NAME);
    let scenario = ScenarioConfig::from_env()?;
    let config = ListenerConfig::from_env(
        scenario_listener::SERVICE_NAME,
        scenario_listener::DEFAULT_QUEUE,
        scenario_listener::DEFAULT_PORT,
    )?;
    let public_web = scenario_listener::public_web_url()?;
    let scenario = Scenario::new(scenario, &public_web)?;
    let handles: Vec<&str> = scenario.event_types().collect();
    tracing::info!(?handles, %public_web, queue = %config.consumer.queue, "scenario loaded");
    let listener = Listener::bind(config, scenario).await?;
    tracing::info!(addr = %listener.local_addr(), "health endpoint listening");
    let ran = listener.run(common::shutdown::on_signal()).await;
    telemetry.shutdown().await;
    Ok(ran?)
}
