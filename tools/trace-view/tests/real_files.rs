//! Files the real services wrote (tests/fixtures/real: public-web,
//! dispatcher and ping-listener with TRACE_FILE_DIR, three pings, an unknown
//! event type, and a ping with the dispatcher stopped): the exporter's actual
//! encoding parses and the round trip nests as the code paths say it should.

use std::path::PathBuf;

use trace_view::{Selection, Style, run};

const STYLE: Style = Style {
    color: false,
    bar_width: 40,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real")
}

/// (indent, label) of each row of the waterfall.
fn tree(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .skip(3)
        .map(|line| {
            let left = line.split('│').next().unwrap();
            let label = left.trim_start().split("  ").next().unwrap();
            (left.len() - left.trim_start().len(), label.to_owned())
        })
        .collect()
}

#[test]
fn a_ping_round_trip_is_one_nine_span_chain() {
    let output = run(
        &fixtures(),
        &Selection::Trace("0e120f96673bdbfa8035b529b29d239a".to_owned()),
        &STYLE,
    )
    .unwrap();
    assert!(output.warnings.is_empty(), "{:?}", output.warnings);
    assert!(
        output.text.starts_with(
            "trace 0e120f96673bdbfa8035b529b29d239a  ·  9 spans  ·  3 services  ·  13.845 ms"
        ),
        "{}",
        output.text
    );
    let labels = [
        "public-web POST /",
        "public-web POST",
        "dispatcher POST /",
        "dispatcher tv-ping-13391 publish",
        "ping-listener tv-ping-13391 process",
        "ping-listener tv-resp-13391 publish",
        "dispatcher tv-resp-13391 process",
        "dispatcher POST",
        "public-web POST /dispatch",
    ];
    let expected: Vec<(usize, String)> = labels
        .iter()
        .enumerate()
        .map(|(depth, label)| (2 * depth, (*label).to_owned()))
        .collect();
    assert_eq!(tree(&output.text), expected);
}

#[test]
fn the_failed_forward_shows_its_error_event() {
    let output = run(&fixtures(), &Selection::Last, &STYLE).unwrap();
    let lines: Vec<&str> = output.text.lines().collect();
    assert!(lines[0].starts_with("trace 35e2908e927107c4b479ad277f954640  ·  2 spans"));
    assert!(lines[3].ends_with("│  ERROR (HTTP 502)"), "{}", lines[3]);
    assert!(
        lines[4].ends_with(
            "│  ERROR: HTTP call failed: error sending request for url (http://127.0.0.1:38711/)"
        ),
        "{}",
        lines[4]
    );
}

#[test]
fn the_list_has_every_trace_newest_first() {
    let text = run(&fixtures(), &Selection::List(20), &STYLE).unwrap().text;
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "35e2908e927107c4b479ad277f954640",
            "e27ec4679fed44d7d294f11ba3a94615",
            "17c3ad9cd0987e89201fb4766204088a",
            "98181fea61907c789ed0f48bb48176d3",
            "0e120f96673bdbfa8035b529b29d239a",
            "9fe4e992f156cab4b7331db61d78fdca",
            "f6bc940755cfc70ad39956cc1ffaa84c",
        ]
    );
}
