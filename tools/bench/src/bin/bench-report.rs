//! bench-report: turns what one bin/bench run wrote (JSON lines) into the
//! results table, memory figures and targets; prints them, optionally
//! rewrites the generated section of BENCHMARKS.md, and fails when a point
//! had errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bench::report::{self, Results, RunInfo};
use bench::sweep::Sweep;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "bench-report")]
struct Cli {
    /// The measured points: one `{"scenario","concurrency","busy","report"}` per line.
    #[arg(long)]
    points: PathBuf,
    /// Idle RSS lines `{"service","stack","rss_kib"}`.
    #[arg(long)]
    idle: Option<PathBuf>,
    /// parked-rss's JSON lines, one per protocol.
    #[arg(long)]
    parked: Option<PathBuf>,
    /// parked-rss's JSON lines for bench's bare-h2-server (hyper's floor), one per protocol.
    #[arg(long)]
    parked_floor: Option<PathBuf>,
    /// ws-idle-rss's JSON line.
    #[arg(long)]
    idle_sockets: Option<PathBuf>,
    /// webhook-bench's JSON line.
    #[arg(long)]
    webhooks: Option<PathBuf>,
    /// The OTLP sink's /stats JSON.
    #[arg(long)]
    sink: Option<PathBuf>,
    #[arg(long, default_value = "")]
    date: String,
    #[arg(long, default_value = "")]
    command: String,
    /// The commit measured (`git describe --always --dirty`).
    #[arg(long, default_value = "")]
    tree: String,
    #[arg(long, default_value = "")]
    cores: String,
    #[arg(long, default_value = "")]
    cpu: String,
    #[arg(long, default_value = "")]
    rabbitmq: String,
    #[arg(long, default_value = "")]
    duration: String,
    /// Rewrite the generated section of this Markdown file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Print only the floor study's table (`bin/bench --floor-study`).
    #[arg(long)]
    floor_study: bool,
    /// Print only the sweeps' tables (`bin/bench --sweep`) and draw their
    /// plots into this directory.
    #[arg(long, value_name = "DIR", requires = "font")]
    sweep: Option<PathBuf>,
    /// The TrueType font the plots' labels are drawn with.
    #[arg(long)]
    font: Option<PathBuf>,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The JSON lines of `path`, each parsed as a `T`.
fn lines<T: serde::de::DeserializeOwned>(path: &PathBuf) -> anyhow::Result<Vec<T>> {
    report::parse_lines(&read(path)?)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let points = lines(&cli.points)?;
    let idle = cli
        .idle
        .as_ref()
        .map(lines)
        .transpose()?
        .unwrap_or_default();
    let parked = cli
        .parked
        .as_ref()
        .map(lines)
        .transpose()?
        .unwrap_or_default();
    let parked_floor = cli
        .parked_floor
        .as_ref()
        .map(lines)
        .transpose()?
        .unwrap_or_default();
    let idle_sockets = cli
        .idle_sockets
        .as_ref()
        .map(lines)
        .transpose()?
        .and_then(|mut idle| idle.pop());
    let webhooks = cli
        .webhooks
        .as_ref()
        .map(lines)
        .transpose()?
        .and_then(|mut runs| runs.pop());
    let sink: BTreeMap<String, u64> = match &cli.sink {
        Some(path) => serde_json::from_str(read(path)?.trim())
            .with_context(|| format!("parsing {}", path.display()))?,
        None => BTreeMap::new(),
    };
    let mut failures = report::failures(&points);
    failures.extend(report::export_failure(&points, &sink));
    let results = Results {
        points: report::merge_rounds(points),
        idle,
        parked,
        parked_floor,
        idle_sockets,
        webhooks,
    };
    let info = RunInfo {
        date: cli.date,
        command: cli.command,
        tree: cli.tree,
        cores: cli.cores,
        cpu: cli.cpu,
        rabbitmq: cli.rabbitmq,
        duration: cli.duration,
        sink,
    };
    if cli.floor_study {
        println!(
            "Floor study, {} ({}; {}; RabbitMQ {}; {} per point)\n\n{}",
            info.date,
            info.command,
            info.tree,
            info.rabbitmq,
            info.duration,
            results.floor_study()
        );
        return Ok(exit_code(&failures));
    }
    if let (Some(dir), Some(font)) = (&cli.sweep, &cli.font) {
        let sweep = Sweep::from_points(&results.points);
        let font = std::fs::read(font).with_context(|| format!("reading {}", font.display()))?;
        let plots = sweep
            .plot(dir, Vec::leak(font))
            .map_err(|error| anyhow::anyhow!(error))?;
        println!(
            "Sweeps, {} ({}; {}; RabbitMQ {}; {} per point)\n\n{}",
            info.date,
            info.command,
            info.tree,
            info.rabbitmq,
            info.duration,
            sweep.tables()
        );
        for plot in plots {
            eprintln!("bench-report: plot written to {}", plot.display());
        }
        return Ok(exit_code(&failures));
    }
    let section = report::section(&info, &results);
    println!("{section}");
    if let Some(path) = &cli.markdown {
        let document = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, report::replace_section(&document, &section))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench-report: results written to {}", path.display());
    }
    Ok(exit_code(&failures))
}

/// Reports the failures; success when there are none.
fn exit_code(failures: &[String]) -> ExitCode {
    for failure in failures {
        eprintln!("bench-report: FAILED: {failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
