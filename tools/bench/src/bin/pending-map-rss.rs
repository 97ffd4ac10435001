//! pending-map-rss: the resident memory of public-web's parking structure
//! alone — the `PendingRequests` map with one waiting request per id, as
//! `POST /` parks them — without the HTTP connections that carry the
//! requests (those cost what the HTTP stack costs; see `parked-rss`).
//!
//! Parks `--requests` ids (UUIDs, like public-web assigns), each with its
//! receiving guard held, reads `VmRSS` before and after, and prints one
//! JSON line.

use clap::Parser;
use public_web::pending::PendingRequests;

/// public-web's allocator, so the map costs what it costs there.
#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

#[derive(Debug, Parser)]
#[command(name = "pending-map-rss")]
struct Cli {
    /// Requests to park.
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let cli = Cli::parse();
    let ids: Vec<String> = (0..cli.requests)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let pending = PendingRequests::new(cli.requests);
    let before = rss_kib();
    let parked: Vec<_> = ids
        .iter()
        .map(|id| pending.park(id).expect("under the cap, unique ids"))
        .collect();
    let after = rss_kib();
    assert_eq!(pending.len(), cli.requests);
    let extra_kib = after.saturating_sub(before);
    println!(
        "{{\"requests\":{},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"extra_mib\":{:.1},\"bytes_per_request\":{}}}",
        cli.requests,
        extra_kib as f64 / 1024.0,
        extra_kib * 1024 / cli.requests.max(1) as u64
    );
    drop(parked);
    assert!(pending.is_empty());
}
