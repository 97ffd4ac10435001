//! The `trace` binary: arguments, exit status, and where its output goes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real")
}

fn trace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trace"))
        .args(args)
        .env_remove("TRACE_FILE_DIR")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

#[test]
fn prints_a_trace_by_id_without_colour_when_piped() {
    let dir = fixtures();
    let output = trace(&[
        "--dir",
        dir.to_str().unwrap(),
        "0e120f96673bdbfa8035b529b29d239a",
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("trace 0e120f96673bdbfa8035b529b29d239a  ·  9 spans"));
    assert!(!stdout.contains('\x1b'));
    assert!(output.stderr.is_empty());
}

#[test]
fn colour_always_paints_errors_red() {
    let dir = fixtures();
    let output = trace(&[
        "--dir",
        dir.to_str().unwrap(),
        "--last",
        "--color",
        "always",
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("\x1b[31mERROR (HTTP 502)\x1b[0m"),
        "{stdout}"
    );
}

#[test]
fn the_dir_defaults_to_trace_file_dir() {
    let output = Command::new(env!("CARGO_BIN_EXE_trace"))
        .args(["--list", "-n", "1"])
        .env("TRACE_FILE_DIR", fixtures())
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("35e2908e927107c4b479ad277f954640")
    );
    assert_eq!(
        stdout.lines().nth(2).unwrap(),
        "… and 6 older traces (--limit to see more)"
    );
}

#[test]
fn failures_exit_non_zero_with_the_reason_on_stderr() {
    let dir = fixtures();
    let output = trace(&[
        "--dir",
        dir.to_str().unwrap(),
        "00000000000000000000000000000abc",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with(&format!(
        "error: no spans for trace 00000000000000000000000000000abc in {}; were the services started with TRACE_FILE_DIR? bin/restart.sh does that",
        dir.display()
    )), "{stderr}");

    let output = trace(&["--dir", "/nonexistent/traces", "--last"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "error: /nonexistent/traces does not exist; were the services started with TRACE_FILE_DIR? bin/restart.sh does that\n"
    );

    // Usage errors are clap's: exit 2.
    assert_eq!(trace(&[]).status.code(), Some(2));
    assert_eq!(trace(&["--last", "--list"]).status.code(), Some(2));
    assert_eq!(trace(&["--last", "-n", "3"]).status.code(), Some(2));
}
