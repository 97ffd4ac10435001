//! Runs scenario-listener: loads the scenario (refusing to start when it
//! is invalid, naming the place in it), binds the health port and consumes
//! `scenario-request` until SIGTERM / SIGINT.

use common::listener::{Listener, ListenerConfig};
use scenario_listener::{DEFAULT_PORT, DEFAULT_QUEUE, SERVICE_NAME, Scenario, ScenarioConfig};

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::service::run(SERVICE_NAME, |shutdown| async {
        let scenario = ScenarioConfig::from_env()?;
        let config = ListenerConfig::from_env(SERVICE_NAME, DEFAULT_QUEUE, DEFAULT_PORT)?;
        let public_web = scenario_listener::public_web_url()?;
        let scenario = Scenario::new(scenario, &public_web)?;
        let handles: Vec<&str> = scenario.event_types().collect();
        tracing::info!(?handles, %public_web, queue = %config.consumer.queue, "scenario loaded");
        let listener = Listener::bind(config, scenario).await?;
        Ok(listener.run(shutdown).await?)
    })
    .await
}
