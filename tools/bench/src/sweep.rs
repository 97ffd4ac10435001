//! `bin/bench --sweep`: how cost grows with the requests in flight and with
//! the size of each event, for the full path and the AMQP floor side by
//! side, as Markdown tables and as PNG plots.
//!
//! bin/bench names the points `sweep:<floor|full>` (at each concurrency)
//! and `body:<bytes>:<floor|full>` (each body size at one concurrency).
//! CPU per request counts every process bin/bench watched for the point
//! (the services, the broker and the load generator), not the machine's
//! other load, so the payload table's "per KB" column shows what each byte
//! costs wherever it is copied.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::report::{Numbers, Point};

/// The two paths each sweep compares, as the points name them.
const PATHS: [(&str, &str); 2] = [("floor", "raw AMQP floor"), ("full", "full path")];

/// One path's measurement at one x (requests in flight, or body bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub x: usize,
    pub numbers: Numbers,
    /// CPU of the watched processes per request, in µs.
    pub cpu_us: f64,
}

/// Both sweeps, each path's samples in ascending x.
#[derive(Debug, Default, PartialEq)]
pub struct Sweep {
    /// Per path (`floor`, `full`): by requests in flight.
    pub concurrency: Vec<(String, Vec<Sample>)>,
    /// Per path: by body size, at `body_concurrency` in flight.
    pub bodies: Vec<(String, Vec<Sample>)>,
    pub body_concurrency: usize,
}

impl Sweep {
    /// The sweep points among `points` (merged rounds).
    pub fn from_points(points: &[Point]) -> Self {
        let mut sweep = Self::default();
        for (path, _) in PATHS {
            let by_concurrency = samples(points, |point| {
                (point.scenario == format!("sweep:{path}")).then_some(point.concurrency)
            });
            sweep.concurrency.push((path.to_owned(), by_concurrency));
            let by_body = samples(points, |point| {
                let rest = point.scenario.strip_prefix("body:")?;
                let (bytes, of) = rest.split_once(':')?;
                (of == path).then(|| bytes.parse().ok()).flatten()
            });
            sweep.bodies.push((path.to_owned(), by_body));
        }
        sweep.body_concurrency = points
            .iter()
            .find(|point| point.scenario.starts_with("body:"))
            .map_or(0, |point| point.concurrency);
        sweep
    }

    /// Both tables, as Markdown.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| in flight | floor req/s | full req/s | full ÷ floor | floor p50 / p99 ms | full p50 / p99 ms | floor CPU µs/req | full CPU µs/req | errors |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for (x, floor, full) in rows(&self.concurrency) {
            let _ = writeln!(
                out,
                "| {x} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rps(floor),
                rps(full),
                ratio(floor, full),
                latency(floor),
                latency(full),
                cpu(floor, |s| s.cpu_us),
                cpu(full, |s| s.cpu_us),
                errors(floor, full),
            );
        }
        let _ = writeln!(
            out,
            "\nBy body size, {} in flight:\n\n| body bytes | floor req/s | full req/s | full ÷ floor | floor p99 ms | full p99 ms | floor CPU µs/req | full CPU µs/req | floor CPU µs per KB | full CPU µs per KB | errors |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            self.body_concurrency
        );
        for (x, floor, full) in rows(&self.bodies) {
            let per_kb = |sample: &Sample| sample.cpu_us * 1024.0 / x as f64;
            let _ = writeln!(
                out,
                "| {x} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rps(floor),
                rps(full),
                ratio(floor, full),
                floor.map_or("–".into(), |s| format!("{:.2}", s.numbers.p99_ms)),
                full.map_or("–".into(), |s| format!("{:.2}", s.numbers.p99_ms)),
                cpu(floor, |s| s.cpu_us),
                cpu(full, |s| s.cpu_us),
                cpu(floor, per_kb),
                cpu(full, per_kb),
                errors(floor, full),
            );
        }
        out
    }

    /// Writes `concurrency.png` and `payload.png` into `dir`; returns their
    /// paths. `font` is a TrueType font for the labels.
    pub fn plot(&self, dir: &Path, font: &'static [u8]) -> Result<Vec<PathBuf>, String> {
        plotters::style::register_font("sans-serif", FontStyle::Normal, font)
            .map_err(|_| "the font is not a TrueType font".to_owned())?;
        std::fs::create_dir_all(dir).map_err(|error| error.to_string())?;
        let concurrency = dir.join("concurrency.png");
        draw(
            &concurrency,
            "requests in flight",
            &self.concurrency,
            &[
                ("req/s", |s: &Sample| s.numbers.rps),
                ("p99 latency, ms", |s: &Sample| s.numbers.p99_ms),
            ],
        )?;
        let payload = dir.join("payload.png");
        draw(
            &payload,
            &format!("body bytes ({} in flight)", self.body_concurrency),
            &self.bodies,
            &[
                ("req/s", |s: &Sample| s.numbers.rps),
                ("CPU µs per request", |s: &Sample| s.cpu_us),
            ],
        )?;
        Ok(vec![concurrency, payload])
    }
}

/// The points `x_of` places, as samples in ascending x.
fn samples(points: &[Point], x_of: impl Fn(&Point) -> Option<usize>) -> Vec<Sample> {
    let mut samples: Vec<Sample> = points
        .iter()
        .filter_map(|point| {
            let x = x_of(point)?;
            let cpu_ms: f64 = point
                .cpu_ms
                .iter()
                .filter(|(process, _)| process.as_str() != "other")
                .map(|(_, ms)| ms)
                .sum();
            let requests = point.report.requests.max(1) as f64;
            Some(Sample {
                x,
                numbers: point.report.clone(),
                cpu_us: cpu_ms * 1000.0 / requests,
            })
        })
        .collect();
    samples.sort_by_key(|sample| sample.x);
    samples
}

/// Each x of either path, with the floor's and the full path's sample.
fn rows<'a>(
    series: &'a [(String, Vec<Sample>)],
) -> Vec<(usize, Option<&'a Sample>, Option<&'a Sample>)> {
    let of = |path: &str| {
        series
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, samples)| samples.as_slice())
            .unwrap_or_default()
    };
    let (floor, full) = (of("floor"), of("full"));
    let mut xs: Vec<usize> = floor.iter().chain(full).map(|s| s.x).collect();
    xs.sort_unstable();
    xs.dedup();
    xs.into_iter()
        .map(|x| {
            let at = |samples: &'a [Sample]| samples.iter().find(|s| s.x == x);
            (x, at(floor), at(full))
        })
        .collect()
}

fn rps(sample: Option<&Sample>) -> String {
    sample.map_or("–".into(), |s| format!("{:.0}", s.numbers.rps))
}

fn ratio(floor: Option<&Sample>, full: Option<&Sample>) -> String {
    match (floor, full) {
        (Some(floor), Some(full)) if floor.numbers.rps > 0.0 => {
            format!("{:.0} %", full.numbers.rps / floor.numbers.rps * 100.0)
        }
        _ => "–".into(),
    }
}

fn latency(sample: Option<&Sample>) -> String {
    sample.map_or("–".into(), |s| {
        format!("{:.2} / {:.2}", s.numbers.p50_ms, s.numbers.p99_ms)
    })
}

fn cpu(sample: Option<&Sample>, value: impl Fn(&Sample) -> f64) -> String {
    sample.map_or("–".into(), |s| format!("{:.0}", value(s)))
}

fn errors(floor: Option<&Sample>, full: Option<&Sample>) -> u64 {
    [floor, full]
        .into_iter()
        .flatten()
        .map(|s| s.numbers.errors)
        .sum()
}

/// What a chart plots: its name, and how to read it from a sample.
type Measure<'a> = (&'a str, fn(&Sample) -> f64);

/// One PNG: a chart per measure, stacked, x on a log scale, a line per path.
fn draw(
    path: &Path,
    x_label: &str,
    series: &[(String, Vec<Sample>)],
    measures: &[Measure<'_>],
) -> Result<(), String> {
    let error = |error: &dyn std::fmt::Display| format!("{}: {error}", path.display());
    let xs = series
        .iter()
        .flat_map(|(_, samples)| samples.iter().map(|s| s.x));
    let (low, high) = xs.fold((usize::MAX, 1), |(low, high), x| (low.min(x), high.max(x)));
    if low > high {
        return Err(error(&"no sweep points to plot"));
    }
    let root = BitMapBackend::new(path, (900, 320 * measures.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let panels = root.split_evenly((measures.len(), 1));
    let colours = [RED, BLUE];
    for (panel, (measure, value)) in panels.iter().zip(measures) {
        let top = series
            .iter()
            .flat_map(|(_, samples)| samples.iter().map(value))
            .fold(0.0, f64::max)
            * 1.1;
        chart(
            panel,
            measure,
            x_label,
            (low as f64..high as f64).log_scale(),
            0.0..top.max(1.0),
            series,
            *value,
            &colours,
        )
        .map_err(|e| error(&e))?;
    }
    root.present().map_err(|e| error(&e))
}

/// One chart of `draw`.
#[allow(clippy::too_many_arguments)]
fn chart<X>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    measure: &str,
    x_label: &str,
    x_range: X,
    y_range: std::ops::Range<f64>,
    series: &[(String, Vec<Sample>)],
    value: fn(&Sample) -> f64,
    colours: &[RGBColor],
) -> Result<(), Box<dyn std::error::Error>>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(measure, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(measure)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for ((path, samples), colour) in series.iter().zip(colours) {
        let label = PATHS
            .iter()
            .find(|(name, _)| name == path)
            .map_or(path.as_str(), |(_, label)| label);
        let colour = *colour;
        let points: Vec<(f64, f64)> = samples.iter().map(|s| (s.x as f64, value(s))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(
            points
                .into_iter()
                .map(|point| Circle::new(point, 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::parse_lines;

    fn point(scenario: &str, concurrency: usize, rps: f64, cpu_ms: f64) -> String {
        format!(
            r#"{{"scenario":"{scenario}","concurrency":{concurrency},"cpu_ms":{{"broker":{cpu_ms},"client":{cpu_ms},"other":5000}},"report":{{"rps":{rps},"p50_ms":1.0,"p99_ms":4.0,"requests":1000,"errors":0}}}}"#
        )
    }

    #[test]
    fn points_become_both_tables_in_ascending_order() {
        let lines = [
            point("sweep:full", 64, 3000.0, 200.0),
            point("sweep:floor", 64, 10000.0, 100.0),
            point("sweep:floor", 1, 1000.0, 100.0),
            point("sweep:full", 1, 500.0, 400.0),
            point("body:4096:full", 16, 800.0, 1000.0),
            point("body:4096:floor", 16, 2000.0, 500.0),
            point("full", 64, 1.0, 1.0),
        ]
        .join("\n");
        let points: Vec<Point> = parse_lines(&lines).unwrap();
        let sweep = Sweep::from_points(&points);
        assert_eq!(sweep.body_concurrency, 16);
        let tables = sweep.tables();
        // CPU per request leaves out the machine's other load: (100 + 100)
        // ms over 1,000 requests is 200 µs.
        assert!(
            tables
                .contains("| 1 | 1000 | 500 | 50 % | 1.00 / 4.00 | 1.00 / 4.00 | 200 | 800 | 0 |"),
            "{tables}"
        );
        let one = tables.find("| 1 |").unwrap();
        let sixty_four = tables.find("| 64 |").unwrap();
        assert!(one < sixty_four, "{tables}");
        // 2,000 µs per request of 4 KiB is 500 µs per KiB.
        assert!(
            tables.contains(
                "| 4096 | 2000 | 800 | 40 % | 4.00 | 4.00 | 1000 | 2000 | 250 | 500 | 0 |"
            ),
            "{tables}"
        );
    }
}
