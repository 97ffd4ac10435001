//! Telling the event stream what became of deliveries: one given up after
//! its last attempt is announced as a `WebhookDeliveryExhausted` event, so
//! live subscribers and monitoring see it (`{"exact": {"type":
//! "WebhookDeliveryExhausted"}}`).
//!
//! A notice's direction is `notice` and its source `webhook-sender`.
//! Webhooks carry answers (direction `response`) only, so a notice never
//! becomes a delivery of its own, let alone a loop of them. The exhausted
//! delivery stays recorded in the store either way: a notice that cannot
//! be published (no broker session) is logged and not retried.

use std::time::Duration;

use common::Event;
use common::amqp::stream::{StreamConfig, record_properties};
use common::amqp::{Broker, Readiness, connection};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::Claimed;

/// The type of the notice of an exhausted delivery.
pub const EXHAUSTED: &str = "WebhookDeliveryExhausted";

/// The direction notices are recorded with.
pub const NOTICE: &str = "notice";

/// How long a notice waits for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes notices on the session [`Notices::run`] keeps.
#[derive(Clone)]
pub struct Notices {
    stream: String,
    channel: watch::Receiver<Option<Channel>>,
}

/// Keeps an AMQP session with a confirm channel for [`Notices`].
pub struct NoticeSession {
    broker: Broker,
    stream: StreamConfig,
    channel: watch::Sender<Option<Channel>>,
}

pub fn new(broker: Broker, stream: StreamConfig) -> (Notices, NoticeSession) {
    let (sender, receiver) = watch::channel(None);
    (
        Notices {
            stream: stream.name.clone(),
            channel: receiver,
        },
        NoticeSession {
            broker,
            stream,
            channel: sender,
        },
    )
}

impl NoticeSession {
    /// Holds a session until `shutdown`, reconnecting as every service does.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = format!("{}-notices", crate::SERVICE_NAME);
        connection::supervise(
            &self.broker,
            &name,
            &Readiness::ungauged(),
            &shutdown,
            |connection| self.session(connection, shutdown.clone()),
        )
        .await;
    }

    async fn session(
        &self,
        connection: Connection,
        shutdown: CancellationToken,
    ) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        self.stream.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.channel.send_replace(Some(channel));
        let outcome = tokio::select! {
            error = connection::connection_failed(&connection) => Err(error),
            _ = shutdown.cancelled() => Ok(()),
        };
        self.channel.send_replace(None);
        if outcome.is_ok() {
            connection::close(&connection).await;
        }
        outcome
    }
}

impl Notices {
    /// Announces that `delivery` was given up after its last attempt.
    pub async fn exhausted(&self, delivery: &Claimed, status: Option<u16>, error: Option<&str>) {
        let data = json!({
            "webhook_id": delivery.id,
            "endpoint_id": delivery.endpoint_id,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "attempts": delivery.attempts + 1,
            "last_status": status,
            "last_error": error,
        });
        let data: Map<String, Value> = match data {
            Value::Object(data) => data,
            _ => unreachable!("json! of an object is an object"),
        };
        let event = Event::new(EXHAUSTED, data);
        if let Err(why) = self.publish(&event).await {
            tracing::warn!(webhook_id = %delivery.id, %why, "the exhausted delivery's notice was not published");
        }
    }

    async fn publish(&self, event: &Event) -> Result<(), String> {
        let channel = self.channel.borrow().clone().ok_or("no broker session")?;
        let properties = record_properties(
            &event.id,
            &event.kind,
            NOTICE,
            crate::SERVICE_NAME,
            &common::telemetry::hop::current_context(),
        );
        let confirm = channel
            .basic_publish(
                "".into(),
                self.stream.as_str().into(),
                BasicPublishOptions::default(),
                &event.to_vec(),
                properties,
            )
            .await
            .map_err(|error| error.to_string())?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
            Ok(Ok(_)) => Err("the broker refused it".to_owned()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no confirm in time".to_owned()),
        }
    }
}
