//! Reading the event stream into the deliveries owed.
//!
//! One sender at a time reads: the one holding a PostgreSQL advisory lock
//! (the others wait to take over when its connection goes). For each batch
//! of records it reads the enabled endpoints, matches every response event
//! against their filters, and stores the deliveries and the next offset in
//! one transaction before acknowledging the batch to the broker. It
//! resumes at the stored offset; on its very first start it begins with the
//! records appended after it (a new endpoint receives what happens after it
//! is registered).
//!
//! Webhooks carry answers: only records whose direction is `response` are
//! matched, so `{"exact": {"id": "<request id>"}}` selects the one answer.
//! A disabled endpoint is not matched: answers are not kept for it while
//! it is disabled (what it was owed before waits for it to be enabled).

use std::sync::Arc;
use std::time::Duration;

use common::amqp::stream::{self, Record, StartAt, StreamConfig};
use common::amqp::{Broker, Readiness, connection};
use common::filter::{Filters, Subject};
use common::wire::Event;
use deadpool_postgres::Pool;
use futures_util::{FutureExt, StreamExt};
use lapin::Connection;
use lapin::options::BasicAckOptions;
use tokio_util::sync::CancellationToken;

use crate::store::{NewDelivery, Store};

/// Records read before their deliveries are stored, at most.
const BATCH: usize = 256;

/// The advisory lock of the reader (any constant every sender shares).
const READER_LOCK: i64 = 0x7768_2d72_6561_6472;

/// How often a waiting sender tries to become the reader, and the reader
/// checks it still holds the lock.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(2);

pub struct Reader {
    pub store: Store,
    pub pool: Pool,
    pub broker: Broker,
    pub stream: StreamConfig,
    /// Set while this sender reads the stream.
    pub reading: Readiness,
    /// Woken when deliveries were recorded.
    pub owed: Arc<tokio::sync::Notify>,
    pub shutdown: CancellationToken,
}

impl Reader {
    /// Waits to lead, reads while leading, until shutdown.
    pub async fn run(self: Arc<Self>) {
        while !self.shutdown.is_cancelled() {
            let Some(lock) = self.lead().await else {
                return;
            };
            tracing::info!(stream = %self.stream.name, "this sender reads the event stream");
            let lost = self.shutdown.child_token();
            let watch = tokio::spawn(hold(lock, lost.clone()));
            let name = format!("{}-reader", crate::SERVICE_NAME);
            connection::supervise(&self.broker, &name, &self.reading, &lost, |connection| {
                self.clone().session(connection, lost.clone())
            })
            .await;
            self.reading.set(false);
            lost.cancel();
            let _ = watch.await;
        }
    }

    /// A connection holding the reader lock, once this sender gets it;
    /// `None` at shutdown.
    async fn lead(&self) -> Option<deadpool_postgres::Object> {
        loop {
            let attempt = async {
                let client = self.pool.get().await.ok()?;
                let row = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&READER_LOCK])
                    .await
                    .ok()?;
                row.get::<_, bool>(0).then_some(client)
            };
            if let Some(client) = attempt.await {
                return Some(client);
            }
            tokio::select! {
                _ = tokio::time::sleep(LEADERSHIP_CHECK) => {}
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// One reading session on `connection`, until `lost` (shutdown, or the
    /// reader lock gone: another sender may read now).
    async fn session(
        self: Arc<Self>,
        connection: Connection,
        lost: CancellationToken,
    ) -> lapin::Result<()> {
        let start = match self.store.next_offset(&self.stream.name).await {
            Ok(Some(next)) => StartAt::Offset(next),
            Ok(None) => StartAt::Next,
            Err(error) => return Err(store_failed(error)),
        };
        let credit = u16::try_from(BATCH).unwrap_or(u16::MAX);
        let (channel, mut records) = stream::read(&connection, &self.stream, credit, start).await?;
        self.reading.set(true);
        crate::metrics::reading(true);
        tracing::info!(stream = %self.stream.name, ?start, "reading the event stream");
        let failed = connection::connection_failed(&connection);
        tokio::pin!(failed);
        let outcome = loop {
            let first = tokio::select! {
                delivery = records.next() => delivery,
                error = &mut failed => break Err(error),
                _ = lost.cancelled() => break Ok(()),
            };
            let mut batch = Vec::with_capacity(BATCH);
            let mut next = Some(first);
            while let Some(delivery) = next {
                match delivery {
                    Some(Ok(delivery)) => batch.push(delivery),
                    Some(Err(error)) => return Err(error),
                    None => {
                        return Err(lapin::Error::from(std::io::Error::other(
                            "the broker cancelled the stream reader",
                        )));
                    }
                }
                next = if batch.len() < BATCH {
                    records.next().now_or_never()
                } else {
                    None
                };
            }
            let Some(last_tag) = batch.last().map(|delivery| delivery.delivery_tag) else {
                continue;
            };
            let records: Vec<Record> = batch
                .into_iter()
                .filter_map(Record::from_delivery)
                .collect();
            if let Err(error) = self.store_batch(&records).await {
                break Err(store_failed(error));
            }
            channel
                .basic_ack(last_tag, BasicAckOptions { multiple: true })
                .await?;
        };
        self.reading.set(false);
        crate::metrics::reading(false);
        if outcome.is_ok() {
            connection::close(&connection).await;
        }
        outcome
    }

    /// Matches `records` against the enabled endpoints and stores what is
    /// owed with the offset after the last record.
    async fn store_batch(&self, records: &[Record]) -> Result<(), crate::error::StoreError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let endpoints: Vec<(String, Filters)> = self
            .store
            .enabled_endpoints()
            .await?
            .into_iter()
            .filter_map(|(id, filters)| match Filters::parse(&filters) {
                Ok(filters) => Some((id, filters)),
                Err(error) => {
                    tracing::warn!(endpoint = %id, %error, "stored filters no longer parse; skipped");
                    None
                }
            })
            .collect();
        let deliveries: Vec<NewDelivery> = records
            .iter()
            .flat_map(|record| owed(record, &endpoints))
            .collect();
        crate::metrics::records_read(records.len(), deliveries.len());
        self.store
            .enqueue(&self.stream.name, last.offset + 1, &deliveries)
            .await?;
        if !deliveries.is_empty() {
            self.owed.notify_one();
        }
        Ok(())
    }
}

/// The deliveries `record` makes owed to `endpoints`.
fn owed(record: &Record, endpoints: &[(String, Filters)]) -> Vec<NewDelivery> {
    if record.direction != "response" {
        return Vec::new();
    }
    let Ok(event) = serde_json::from_slice::<Event>(&record.body) else {
        return Vec::new();
    };
    let subject = Subject {
        kind: &event.kind,
        id: &event.id,
        source: &record.source,
        direction: &record.direction,
        data: &event.data,
    };
    endpoints
        .iter()
        .filter(|(_, filters)| filters.matches(&subject))
        .map(|(endpoint_id, _)| NewDelivery {
            endpoint_id: endpoint_id.clone(),
            offset: record.offset,
            event_id: event.id.clone(),
            event_type: event.kind.clone(),
            body: record.body.clone(),
            traceparent: record.traceparent.clone(),
        })
        .collect()
}

/// Keeps the reader lock's connection, checking it now and then; cancels
/// `lost` when it breaks (the lock went with it) or when reading stops.
async fn hold(lock: deadpool_postgres::Object, lost: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEADERSHIP_CHECK) => {}
            _ = lost.cancelled() => break,
        }
        let alive = tokio::time::timeout(LEADERSHIP_CHECK, lock.simple_query("SELECT 1")).await;
        if !matches!(alive, Ok(Ok(_))) {
            tracing::warn!("lost the reader lock's connection; another sender may read now");
            lost.cancel();
            break;
        }
    }
    // The lock is a session lock: unlocking keeps a pooled connection from
    // holding it for whoever takes the connection next.
    let _ = lock
        .execute("SELECT pg_advisory_unlock($1)", &[&READER_LOCK])
        .await;
}

fn store_failed(error: crate::error::StoreError) -> lapin::Error {
    lapin::Error::from(std::io::Error::other(format!(
        "storing what the stream owes: {error}"
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(offset: u64, direction: &str, event: serde_json::Value) -> Record {
        Record {
            offset,
            direction: direction.to_owned(),
            source: "ping-listener".to_owned(),
            body: event.to_string().into_bytes(),
            traceparent: None,
        }
    }

    fn endpoint(id: &str, filters: serde_json::Value) -> (String, Filters) {
        (id.to_owned(), Filters::parse(&filters).unwrap())
    }

    #[test]
    fn responses_are_owed_to_every_endpoint_they_match() {
        let endpoints = [
            endpoint("one", json!([{"exact": {"id": "r-1"}}])),
            endpoint("pings", json!([{"prefix": {"type": "Ping"}}])),
            endpoint("tenant", json!([{"exact": {"data.tenant": "acme"}}])),
        ];
        let response = record(
            7,
            "response",
            json!({"id": "r-1", "type": "PingResponse", "data": {"tenant": "acme"}}),
        );
        let owed_to: Vec<String> = owed(&response, &endpoints)
            .into_iter()
            .map(|delivery| delivery.endpoint_id)
            .collect();
        assert_eq!(owed_to, ["one", "pings", "tenant"]);
        let other = record(
            8,
            "response",
            json!({"id": "r-2", "type": "OrderResponse", "data": {}}),
        );
        assert!(owed(&other, &endpoints).is_empty());
        let delivery = &owed(&response, &endpoints)[0];
        assert_eq!(
            (delivery.offset, delivery.event_type.as_str()),
            (7, "PingResponse")
        );
    }

    #[test]
    fn requests_and_garbage_are_owed_to_nobody() {
        let endpoints = [endpoint("pings", json!([{"prefix": {"type": "Ping"}}]))];
        let request = record(
            1,
            "request",
            json!({"id": "r-1", "type": "PingRequest", "data": {}}),
        );
        assert!(owed(&request, &endpoints).is_empty());
        let garbage = Record {
            offset: 2,
            direction: "response".to_owned(),
            source: "x".to_owned(),
            body: b"not json".to_vec(),
            traceparent: None,
        };
        assert!(owed(&garbage, &endpoints).is_empty());
    }
}
