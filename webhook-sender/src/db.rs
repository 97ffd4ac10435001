//! The webhook-sender's PostgreSQL: a pool of connections to
//! `DATABASE_URL`, and the schema brought up to date at start.
//!
//! Migrations are the SQL files of `migrations/`, applied in order, each
//! once, in one transaction under an advisory lock, so several senders
//! starting together apply each exactly once.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::StoreError;

/// (version, name, SQL), in the order they apply.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "webhooks",
    include_str!("../migrations/0001_webhooks.sql"),
)];

/// The advisory lock migrations run under (any constant shared by every
/// sender; this one spells "webhooks").
const MIGRATION_LOCK: i64 = 0x7765_6268_6f6f_6b73;

/// A pool of at most `size` connections (made when first needed).
pub fn pool(config: &tokio_postgres::Config, size: usize) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(2))
        .build()
        .expect("a pool without a timeout needs no runtime")
}

/// Applies the migrations not applied yet; returns their versions.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS webhook_schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let applied: Vec<i32> = transaction
        .query("SELECT version FROM webhook_schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut newly = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO webhook_schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
        newly.push(*version);
    }
    transaction.commit().await?;
    Ok(newly)
}
