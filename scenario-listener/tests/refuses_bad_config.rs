//! The scenario-listener binary refuses to start on a bad scenario, saying
//! where in it the mistake is, before it binds a port or touches the broker.

use std::process::Command;

/// Runs the binary with `SCENARIO_CONFIG` set to `config` (or unset);
/// returns its exit status and stderr.
fn start(config: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scenario-listener"));
    command
        .env_remove("SCENARIO_CONFIG")
        .env("RUST_BACKTRACE", "0")
        // A port and a broker nobody listens on: reaching them would hang
        // in retries instead of exiting, and fail the test by its timeout.
        .env("PORT", "0")
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");
    if let Some(config) = config {
        command.env("SCENARIO_CONFIG", config);
    }
    let output = command.output().expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_invalid_step_is_refused_with_its_path() {
    let (code, stderr) = start(Some(
        r#"{"handlers": {"OrderRequest": {"steps": [
            {"sleep": {"ms": 1}}, {"sleep": {"ms": 2}}, {"sleep": {"ms": "soon"}}
        ]}}}"#,
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "Error: SCENARIO_CONFIG: handlers.OrderRequest.steps[2].sleep.ms: invalid type: \
             string \"soon\", expected milliseconds: a whole number, or {min, max}"
        ),
        "{stderr}"
    );
}

#[test]
fn a_bad_yaml_file_is_refused_naming_the_file() {
    let path = std::env::temp_dir().join(format!("scenario-refused-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "handlers:\n  PayRequest:\n    steps:\n      - parallel:\n          steps:\n            \
         - sleep: { ms: 5, failure_chance: 2 }\n",
    )
    .unwrap();
    let (code, stderr) = start(Some(path.to_str().unwrap()));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Error: SCENARIO_CONFIG ({}): handlers.PayRequest.steps[0].parallel.steps[0].sleep.\
             failure_chance: must be between 0.0 and 1.0, got 2",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn no_scenario_is_refused() {
    let (code, stderr) = start(None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Error: SCENARIO_CONFIG: not set"),
        "{stderr}"
    );
}
