//! `trace`: prints a trace from the services' span and log files as a
//! waterfall with each span's log lines under it, the newest one with
//! --last, or the recent ones with --list. Run it as `bin/trace`, which
//! builds it and runs it from the repo root.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, ValueEnum};
use trace_view::{Selection, Style};

/// Print a trace as a waterfall, each span's log lines under it, from the
/// OTLP JSON span and log files the services write when started with
/// TRACE_FILE_DIR (bin/restart.sh does that).
#[derive(Debug, Parser)]
#[command(name = "trace", version)]
#[command(group(ArgGroup::new("what").required(true).args(["trace_id", "last", "list"])))]
struct Cli {
    /// The trace id: 32 hex characters, as in public-web's x-trace-id header.
    trace_id: Option<String>,

    /// Show the trace that started last.
    #[arg(long)]
    last: bool,

    /// List the recent traces, newest first: id, start, spans, duration, root span.
    #[arg(long)]
    list: bool,

    /// How many traces --list shows [default: 20].
    #[arg(short = 'n', long, conflicts_with_all = ["trace_id", "last"])]
    limit: Option<usize>,

    /// Directory of <service>.jsonl span files and <service>.logs.jsonl log
    /// files [default: $TRACE_FILE_DIR, else out/traces]. bin/trace runs
    /// from the repo root, so a relative path is relative to it.
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Width of the timeline bar, in columns.
    #[arg(long, default_value_t = 40)]
    width: usize,

    /// Colour: auto is on when stdout is a terminal and NO_COLOR is unset.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let style = Style {
        color,
        bar_width: cli.width,
    };
    let selection = match (cli.trace_id, cli.list) {
        (Some(id), _) => Selection::Trace(id),
        (None, true) => Selection::List(cli.limit.unwrap_or(20)),
        (None, false) => Selection::Last,
    };
    // Where bin/restart.sh has the services write (an empty value, which
    // turns their file export off, means the default here).
    let dir = cli.dir.unwrap_or_else(|| {
        std::env::var_os("TRACE_FILE_DIR")
            .filter(|dir| !dir.is_empty())
            .map_or_else(|| PathBuf::from("out/traces"), PathBuf::from)
    });
    match trace_view::run(&dir, &selection, &style) {
        Ok(output) => {
            for warning in output.warnings {
                eprintln!("warning: {warning}");
            }
            match io::stdout().lock().write_all(output.text.as_bytes()) {
                // Piped into head: the reader has what it wanted.
                Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
                    eprintln!("error: writing to stdout: {error}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
