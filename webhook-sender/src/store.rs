//! Registrations, deliveries and the stream offset in PostgreSQL: every
//! statement the webhook-sender runs, in one place.
//!
//! A delivery is a row per (endpoint, stream record), made in the same
//! transaction that moves the stored stream offset past the record, so a
//! crash between reading and recording reads the record again and the
//! unique key keeps it from being owed twice. A sender claims due
//! deliveries for a lease (`claimed_until`); if it dies, the lease runs out
//! and another sender takes them over: at least once, never lost.

use std::time::{Duration, SystemTime};

use common::webhook::Secret;
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Row;

use crate::error::StoreError;

/// A registered endpoint, as the management API shows it (no secret).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    pub filters: Value,
    #[serde(serialize_with = "unix_seconds")]
    pub created_at: SystemTime,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    #[serde(serialize_with = "optional_unix_seconds")]
    pub last_success_at: Option<SystemTime>,
    #[serde(serialize_with = "optional_unix_seconds")]
    pub failing_since: Option<SystemTime>,
}

const ENDPOINT_COLUMNS: &str = "id, url, description, filters, created_at, disabled_at, \
     disabled_reason, last_success_at, failing_since";

impl Endpoint {
    fn from_row(row: &Row) -> Self {
        let disabled_at: Option<SystemTime> = row.get("disabled_at");
        Self {
            id: row.get("id"),
            url: row.get("url"),
            description: row.get("description"),
            filters: row.get("filters"),
            created_at: row.get("created_at"),
            disabled: disabled_at.is_some(),
            disabled_reason: row.get("disabled_reason"),
            last_success_at: row.get("last_success_at"),
            failing_since: row.get("failing_since"),
        }
    }
}

/// How many of an endpoint's deliveries are in each state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub pending: i64,
    pub delivered: i64,
    pub exhausted: i64,
}

/// One attempt, as the endpoint's state lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub delivery_id: String,
    pub attempt: i32,
    #[serde(serialize_with = "unix_seconds")]
    pub at: SystemTime,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// A delivery owed because a record matched an endpoint.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub endpoint_id: String,
    pub offset: u64,
    pub event_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
    pub traceparent: Option<String>,
}

/// A delivery this sender holds, with what it takes to send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The `webhook-id`.
    pub id: String,
    pub endpoint_id: String,
    pub url: String,
    /// The current secret, and the previous one while it still signs.
    pub secrets: Vec<Secret>,
    pub offset: u64,
    pub event_id: String,
    pub event_type: String,
    pub body: bytes::Bytes,
    /// The trace the answer was recorded in.
    pub traceparent: Option<String>,
    /// Attempts made before this one.
    pub attempts: u32,
    /// How long ago the answer was recorded.
    pub age: Duration,
    /// The claim: its attempt is recorded only while it still holds it.
    pub claim: String,
}

/// What became of an attempt, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// 2xx.
    Delivered,
    /// Failed; attempt again after this long.
    RetryAfter(Duration),
    /// Failed, and it was the last attempt.
    Exhausted,
    /// 410: the endpoint asked to be disabled. The delivery waits.
    Gone,
}

/// One attempt's facts.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
    pub settled: Settled,
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub async fn create(
        &self,
        url: &str,
        description: &str,
        filters: &Value,
        secret: &Secret,
    ) -> Result<Endpoint, StoreError> {
        let id = format!("ep_{}", uuid::Uuid::new_v4().simple());
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO webhook_endpoints (id, url, description, filters, secret) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING {ENDPOINT_COLUMNS}"
                ),
                &[&id, &url, &description, filters, &secret.as_bytes()],
            )
            .await?;
        Ok(Endpoint::from_row(&row))
    }

    pub async fn list(&self) -> Result<Vec<Endpoint>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at"),
                &[],
            )
            .await?;
        Ok(rows.iter().map(Endpoint::from_row).collect())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(Endpoint::from_row))
    }

    /// Removes the endpoint and everything owed to it; false when unknown.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute("DELETE FROM webhook_endpoints WHERE id = $1", &[&id])
            .await?;
        Ok(deleted == 1)
    }

    /// Makes `secret` the signing secret; the old one keeps signing for
    /// `overlap`. False when the endpoint is unknown.
    pub async fn rotate(
        &self,
        id: &str,
        secret: &Secret,
        overlap: Duration,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let rotated = client
            .execute(
                "UPDATE webhook_endpoints SET previous_secret = secret, \
                 previous_secret_until = now() + ($3::bigint * interval '1 millisecond'), \
                 secret = $2 WHERE id = $1",
                &[&id, &secret.as_bytes(), &millis(overlap)],
            )
            .await?;
        Ok(rotated == 1)
    }

    /// Enables a disabled endpoint: its waiting deliveries go out again.
    pub async fn enable(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let enabled = client
            .execute(
                "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, \
                 failing_since = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(enabled == 1)
    }

    pub async fn counts(&self, id: &str) -> Result<Counts, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT state, count(*) FROM webhook_deliveries WHERE endpoint_id = $1 \
                 GROUP BY state",
                &[&id],
            )
            .await?;
        let mut counts = Counts::default();
        for row in rows {
            let count: i64 = row.get(1);
            match row.get::<_, &str>(0) {
                "pending" => counts.pending = count,
                "delivered" => counts.delivered = count,
                "exhausted" => counts.exhausted = count,
                _ => {}
            }
        }
        Ok(counts)
    }

    pub async fn recent_attempts(&self, id: &str, limit: i64) -> Result<Vec<Attempt>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT delivery_id, attempt, at, status, error, duration_ms \
                 FROM webhook_attempts WHERE endpoint_id = $1 ORDER BY at DESC LIMIT $2",
                &[&id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Attempt {
                delivery_id: row.get(0),
                attempt: row.get(1),
                at: row.get(2),
                status: row.get(3),
                error: row.get(4),
                duration_ms: row.get(5),
            })
            .collect())
    }

    /// The next offset of `stream` to read, when one was stored.
    pub async fn next_offset(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT next_offset FROM webhook_stream_offsets WHERE stream = $1",
                &[&stream],
            )
            .await?;
        Ok(row.map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
    }

    /// The endpoints deliveries are made to: id and filters.
    pub async fn enabled_endpoints(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, filters FROM webhook_endpoints WHERE disabled_at IS NULL",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Records `deliveries` and that `stream` is read up to
    /// `next_offset`, in one transaction.
    pub async fn enqueue(
        &self,
        stream: &str,
        next_offset: u64,
        deliveries: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        if !deliveries.is_empty() {
            let ids: Vec<String> = deliveries
                .iter()
                .map(|_| format!("msg_{}", uuid::Uuid::new_v4().simple()))
                .collect();
            let endpoints: Vec<&str> = deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
            let offsets: Vec<i64> = deliveries.iter().map(|d| offset_i64(d.offset)).collect();
            let event_ids: Vec<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
            let types: Vec<&str> = deliveries.iter().map(|d| d.event_type.as_str()).collect();
            let bodies: Vec<&[u8]> = deliveries.iter().map(|d| d.body.as_slice()).collect();
            let traces: Vec<Option<&str>> = deliveries
                .iter()
                .map(|d| d.traceparent.as_deref())
                .collect();
            transaction
                .execute(
                    "INSERT INTO webhook_deliveries \
                     (id, endpoint_id, stream_offset, event_id, event_type, body, traceparent) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], \
                     $5::text[], $6::bytea[], $7::text[]) \
                     ON CONFLICT (endpoint_id, stream_offset) DO NOTHING",
                    &[
                        &ids, &endpoints, &offsets, &event_ids, &types, &bodies, &traces,
                    ],
                )
                .await?;
        }
        transaction
            .execute(
                "INSERT INTO webhook_stream_offsets (stream, next_offset) VALUES ($1, $2) \
                 ON CONFLICT (stream) DO UPDATE \
                 SET next_offset = GREATEST(webhook_stream_offsets.next_offset, EXCLUDED.next_offset)",
                &[&stream, &offset_i64(next_offset)],
            )
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due deliveries for `lease`, at most
    /// `per_endpoint` of each endpoint counting the ones this sender has
    /// in flight (`in_flight`: endpoint and count). Senders may claim at
    /// once: a row another claimed meanwhile is skipped.
    pub async fn claim(
        &self,
        limit: i64,
        per_endpoint: i64,
        in_flight: &[(String, i64)],
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let claim = uuid::Uuid::new_v4().simple().to_string();
        let busy: Vec<&str> = in_flight.iter().map(|(id, _)| id.as_str()).collect();
        let counts: Vec<i64> = in_flight.iter().map(|(_, count)| *count).collect();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "UPDATE webhook_deliveries d \
                 SET claimed_until = now() + ($4::bigint * interval '1 millisecond'), claimed_by = $6 \
                 FROM ( \
                     SELECT ranked.id FROM ( \
                         SELECT d.id, d.endpoint_id, d.next_attempt_at, row_number() OVER ( \
                             PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.stream_offset \
                         ) AS turn \
                         FROM webhook_deliveries d \
                         JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                         WHERE d.state = 'pending' AND d.next_attempt_at <= now() \
                         AND (d.claimed_until IS NULL OR d.claimed_until < now()) \
                         AND e.disabled_at IS NULL \
                     ) ranked \
                     LEFT JOIN unnest($3::text[], $5::bigint[]) AS busy (endpoint_id, in_flight) \
                     ON busy.endpoint_id = ranked.endpoint_id \
                     WHERE turn <= $2 - coalesce(busy.in_flight, 0) \
                     ORDER BY next_attempt_at LIMIT $1 \
                 ) due, webhook_endpoints e \
                 WHERE d.id = due.id AND e.id = d.endpoint_id AND d.state = 'pending' \
                 AND d.next_attempt_at <= now() \
                 AND (d.claimed_until IS NULL OR d.claimed_until < now()) \
                 RETURNING d.id, d.endpoint_id, e.url, e.secret, \
                 CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END, \
                 d.stream_offset, d.event_id, d.event_type, d.body, d.attempts, d.traceparent, \
                 extract(epoch FROM now() - d.created_at)::float8",
                &[&limit, &per_endpoint, &busy, &millis(lease), &counts, &claim],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut secrets = vec![Secret::from_bytes(row.get(3))];
                if let Some(previous) = row.get::<_, Option<Vec<u8>>>(4) {
                    secrets.push(Secret::from_bytes(previous));
                }
                Claimed {
                    id: row.get(0),
                    endpoint_id: row.get(1),
                    url: row.get(2),
                    secrets,
                    offset: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
                    event_id: row.get(6),
                    event_type: row.get(7),
                    body: bytes::Bytes::from(row.get::<_, Vec<u8>>(8)),
                    attempts: u32::try_from(row.get::<_, i32>(9)).unwrap_or(0),
                    traceparent: row.get(10),
                    age: Duration::from_secs_f64(row.get::<_, f64>(11).max(0.0)),
                    claim: claim.clone(),
                }
            })
            .collect())
    }

    /// Records an attempt at `delivery` and what follows from it, for the
    /// delivery and its endpoint, in one transaction. An endpoint failing
    /// without a success for `disable_after` is disabled. Returns why,
    /// when this attempt disabled the endpoint.
    pub async fn settle(
        &self,
        delivery: &Claimed,
        record: &AttemptRecord,
        disable_after: Duration,
    ) -> Result<Option<String>, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // A claim that outlived its lease was taken over: the attempt is
        // the new holder's to record.
        let held = transaction
            .query_opt(
                "SELECT 1 FROM webhook_deliveries WHERE id = $1 AND claimed_by = $2 FOR UPDATE",
                &[&delivery.id, &delivery.claim],
            )
            .await?;
        if held.is_none() {
            return Err(StoreError::ClaimLost);
        }
        let attempt = i32::try_from(delivery.attempts + 1).unwrap_or(i32::MAX);
        let status = record.status.map(i32::from);
        let duration_ms = i32::try_from(record.duration.as_millis()).unwrap_or(i32::MAX);
        transaction
            .execute(
                "INSERT INTO webhook_attempts \
                 (delivery_id, attempt, endpoint_id, status, error, duration_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &delivery.id,
                    &attempt,
                    &delivery.endpoint_id,
                    &status,
                    &record.error,
                    &duration_ms,
                ],
            )
            .await?;
        let (state, wait) = match &record.settled {
            Settled::Delivered => ("delivered", Duration::ZERO),
            Settled::RetryAfter(wait) => ("pending", *wait),
            Settled::Exhausted => ("exhausted", Duration::ZERO),
            Settled::Gone => ("pending", Duration::ZERO),
        };
        transaction
            .execute(
                "UPDATE webhook_deliveries SET state = $2, attempts = $3, \
                 next_attempt_at = now() + ($4::bigint * interval '1 millisecond'), \
                 claimed_until = NULL, claimed_by = NULL, last_attempt_at = now(), \
                 last_status = $5, last_error = $6, \
                 finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END \
                 WHERE id = $1",
                &[
                    &delivery.id,
                    &state,
                    &attempt,
                    &millis(wait),
                    &status,
                    &record.error,
                ],
            )
            .await?;
        let disabled = match &record.settled {
            Settled::Delivered => {
                transaction
                    .execute(
                        "UPDATE webhook_endpoints SET last_success_at = now(), \
                         failing_since = NULL WHERE id = $1",
                        &[&delivery.endpoint_id],
                    )
                    .await?;
                None
            }
            Settled::Gone => {
                let reason = "the endpoint answered 410 Gone".to_owned();
                disable(&transaction, &delivery.endpoint_id, &reason).await?;
                Some(reason)
            }
            Settled::RetryAfter(_) | Settled::Exhausted => {
                let row = transaction
                    .query_one(
                        "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now()) \
                         WHERE id = $1 RETURNING failing_since < now() - ($2::bigint * interval '1 millisecond')",
                        &[&delivery.endpoint_id, &millis(disable_after)],
                    )
                    .await?;
                if row.get::<_, bool>(0) {
                    let reason = format!(
                        "failing without a success for longer than {}",
                        humantime::format_duration(disable_after)
                    );
                    disable(&transaction, &delivery.endpoint_id, &reason).await?;
                    Some(reason)
                } else {
                    None
                }
            }
        };
        transaction.commit().await?;
        Ok(disabled)
    }

    /// Deliveries waiting, and the age of the oldest, over all endpoints.
    pub async fn backlog(&self) -> Result<(i64, Duration), StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
                 FROM webhook_deliveries WHERE state = 'pending'",
                &[],
            )
            .await?;
        let oldest: f64 = row.get(1);
        Ok((row.get(0), Duration::from_secs_f64(oldest.max(0.0))))
    }
}

async fn disable(
    transaction: &deadpool_postgres::Transaction<'_>,
    endpoint_id: &str,
    reason: &str,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2 \
             WHERE id = $1 AND disabled_at IS NULL",
            &[&endpoint_id, &reason],
        )
        .await?;
    Ok(())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

fn unix_seconds<S: serde::Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    serializer.serialize_u64(seconds)
}

fn optional_unix_seconds<S: serde::Serializer>(
    at: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => unix_seconds(at, serializer),
        None => serializer.serialize_none(),
    }
}
