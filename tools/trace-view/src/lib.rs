//! `bin/trace`: shows a trace without Grafana, from the span and log files
//! the services append to when started with `TRACE_FILE_DIR`: span files
//! `<dir>/<service>.jsonl`, one OTLP JSON `ExportTraceServiceRequest` per
//! line, and log files `<dir>/<service>.logs.jsonl`, one
//! `ExportLogsServiceRequest` per line.
//!
//! The pipeline: [`load_dir`] parses the files into [`Span`]s and
//! [`LogLine`]s, [`trace::group`] sorts them into [`Trace`]s,
//! [`Trace::rows`] lays one out as a tree, [`Trace::span_logs`] puts each
//! log line under its span, and [`render`] turns that into lines; [`run`]
//! does all of it for one [`Selection`].

pub mod otlp;
pub mod render;
pub mod trace;

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

pub use otlp::{LogLine, Span, SpanKind, Status, StatusCode};
pub use render::Style;
pub use trace::{Row, SpanLogs, Trace};

/// Said whenever the files hold nothing to show.
const HINT: &str = "were the services started with TRACE_FILE_DIR? bin/restart.sh does that";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{dir} does not exist; {HINT}")]
    DirMissing { dir: String },
    #[error(
        "no spans for trace {trace_id} in {dir}; {HINT} (spans reach the files in batches, about every 5 s: a trace just made may need a moment)"
    )]
    TraceNotFound { trace_id: String, dir: String },
    #[error("no spans in {dir}; {HINT}")]
    NoTraces { dir: String },
    #[error("{0:?} is not a trace id: expected 32 hex characters, like the x-trace-id header")]
    InvalidTraceId(String),
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One trace, by id.
    Trace(String),
    /// The trace that started last.
    Last,
    /// The newest traces, at most this many.
    List(usize),
}

/// The spans and log lines found, and the lines that could not be read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub spans: Vec<Span>,
    /// Only the records written in a trace.
    pub logs: Vec<LogLine>,
    pub skipped: Vec<Skipped>,
}

/// A line that is not an OTLP JSON request, most often the last one while
/// a service is still writing it.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    pub error: String,
}

/// What [`run`] has to say: the text for stdout and warnings for stderr.
#[derive(Debug)]
pub struct Output {
    pub text: String,
    pub warnings: Vec<String>,
}

/// Loads the spans and log lines of every `*.jsonl` file in `dir` (span
/// and log files alike: each line says which it holds). With `only_trace`, a
/// lowercase trace id, lines that do not mention it are not parsed at all:
/// the files only grow, and looking up one trace should stay quick.
pub fn load_dir(dir: &Path, only_trace: Option<&str>) -> Result<Loaded, Error> {
    let display = dir.display().to_string();
    if !dir.is_dir() {
        return Err(Error::DirMissing { dir: display });
    }
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|ext| ext == "jsonl") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();

    let needles = only_trace.map(|id| [id.to_ascii_lowercase(), id.to_ascii_uppercase()]);
    let mut loaded = Loaded::default();
    for path in paths {
        let reader = BufReader::new(File::open(&path).map_err(io_error(&path))?);
        for (index, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(io_error(&path))?;
            let skip = |error: String| Skipped {
                path: path.clone(),
                line: index + 1,
                error,
            };
            let Ok(line) = std::str::from_utf8(&line) else {
                loaded.skipped.push(skip("not UTF-8".to_owned()));
                continue;
            };
            if line.trim().is_empty()
                || needles
                    .as_ref()
                    .is_some_and(|ids| !ids.iter().any(|id| line.contains(id.as_str())))
            {
                continue;
            }
            match otlp::parse_line(line) {
                Ok(records) => {
                    loaded.spans.extend(records.spans);
                    loaded.logs.extend(records.logs);
                }
                Err(error) => loaded.skipped.push(skip(error.to_string())),
            }
        }
    }
    Ok(loaded)
}

/// Reads `dir` and renders what `selection` asks for.
pub fn run(dir: &Path, selection: &Selection, style: &Style) -> Result<Output, Error> {
    let display = dir.display().to_string();
    let only_trace = match selection {
        Selection::Trace(id) => Some(parse_trace_id(id)?),
        Selection::Last | Selection::List(_) => None,
    };
    let loaded = load_dir(dir, only_trace.as_deref())?;
    let warnings = skipped_warning(&loaded.skipped).into_iter().collect();
    let traces = trace::group(loaded.spans, loaded.logs);

    let text = match (selection, only_trace) {
        (Selection::Trace(_), Some(trace_id)) => {
            let trace = traces
                .iter()
                .find(|trace| trace.trace_id == trace_id)
                .ok_or(Error::TraceNotFound {
                    trace_id,
                    dir: display,
                })?;
            render::waterfall(trace, style)
        }
        (Selection::List(limit), _) if !traces.is_empty() => render::list(&traces, *limit, style),
        (Selection::Last, _) if !traces.is_empty() => render::waterfall(&traces[0], style),
        _ => return Err(Error::NoTraces { dir: display }),
    };
    Ok(Output { text, warnings })
}

/// A trace id as the files write it: 32 lowercase hex characters.
fn parse_trace_id(id: &str) -> Result<String, Error> {
    let id = id.trim();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(Error::InvalidTraceId(id.to_owned()))
    }
}

fn skipped_warning(skipped: &[Skipped]) -> Option<String> {
    let first = skipped.first()?;
    Some(format!(
        "skipped {} {} not OTLP JSON (first: {}:{}: {}); a service may be writing one right now",
        skipped.len(),
        if skipped.len() == 1 {
            "line that is"
        } else {
            "lines that are"
        },
        first.path.display(),
        first.line,
        first.error
    ))
}
