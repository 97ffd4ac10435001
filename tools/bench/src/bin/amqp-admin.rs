//! amqp-admin: bin/bench's broker housekeeping over AMQP itself, so it
//! needs no rabbitmqctl or management plugin: delete the queues a run
//! declared.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};

#[derive(Debug, Parser)]
#[command(name = "amqp-admin")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Delete these queues (missing ones are fine), printing how many
    /// messages each held.
    DeleteQueues { queues: Vec<String> },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::DeleteQueues { queues } = Cli::parse().command;
    let connection = Connection::connect(&bench::amqp_url(), ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    for queue in &queues {
        // Deleting a queue that does not exist succeeds in RabbitMQ.
        let messages = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("deleting {queue}"))?;
        eprintln!("amqp-admin: deleted {queue} ({messages} messages)");
    }
    connection.close(200, "done".into()).await.ok();
    Ok(())
}
