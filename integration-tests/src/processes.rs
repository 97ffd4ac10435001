//! The services as real processes: what process-wide state needs, such as
//! one OpenTelemetry pipeline and one `service.name` per service.
//!
//! The binaries are the workspace's own debug builds; they are built first
//! if missing, so `cargo test` alone is enough.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::Topology;

/// `target/<profile>/`, where the test binary's `deps/` folder lives.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of a workspace binary. The service binaries are (re)built once
/// per test process, so a test never runs a stale build; when they are up
/// to date that is a no-op.
fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args([
            "build",
            "--quiet",
            "-p",
            "public-web",
            "-p",
            "dispatcher",
            "-p",
            "ping-listener",
        ]);
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the service binaries failed");
    });
    target_dir().join(name)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running service process; killed when dropped.
pub struct ServiceProcess {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    /// Lines the process wrote to stdout, as they come.
    pub stdout: mpsc::UnboundedReceiver<String>,
}

impl ServiceProcess {
    pub async fn spawn(name: &'static str, port: u16, env: &[(String, String)]) -> Self {
        let mut command = Command::new(binary(name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the service starts");
        let (lines, stdout) = mpsc::unbounded_channel();
        let out = child.stdout.take().expect("piped stdout");
        tokio::spawn(async move {
            let mut reader = BufReader::new(out).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            port,
            child,
            stdout,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends SIGTERM and waits for the process; returns whether it exited 0.
    pub async fn terminate(mut self) -> bool {
        let pid = self.child.id().expect("running").to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the service exits within 20 s of SIGTERM")
            .expect("wait");
        status.success()
    }

    /// Stdout lines received so far.
    pub fn drain_stdout(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.try_recv() {
            lines.push(line);
        }
        lines
    }
}

/// The three services as processes on `topology`, sharing `env`.
pub struct ProcessStack {
    pub public_web: ServiceProcess,
    pub dispatcher: ServiceProcess,
    pub listener: ServiceProcess,
}

impl ProcessStack {
    pub async fn start(topology: &Topology, env: &[(String, String)]) -> Self {
        let dispatcher_port = free_port();
        let mut dispatcher_env = env.to_vec();
        dispatcher_env.extend([
            (
                "ROUTES".to_owned(),
                format!("PingRequest={}", topology.request_queue),
            ),
            ("RESPONSE_QUEUE".to_owned(), topology.response_queue.clone()),
        ]);
        let dispatcher =
            ServiceProcess::spawn("dispatcher", dispatcher_port, &dispatcher_env).await;

        let mut listener_env = env.to_vec();
        listener_env.push(("QUEUE".to_owned(), topology.request_queue.clone()));
        let listener = ServiceProcess::spawn("ping-listener", free_port(), &listener_env).await;

        let mut public_web_env = env.to_vec();
        public_web_env.push(("DISPATCHER_URL".to_owned(), dispatcher.url()));
        let public_web = ServiceProcess::spawn("public-web", free_port(), &public_web_env).await;

        for service in [&dispatcher, &listener, &public_web] {
            crate::wait_ready(&service.url()).await;
        }
        Self {
            public_web,
            dispatcher,
            listener,
        }
    }

    /// SIGTERMs all three (flushing their telemetry); true if all exited 0.
    pub async fn terminate(self) -> bool {
        let public_web = self.public_web.terminate().await;
        let listener = self.listener.terminate().await;
        let dispatcher = self.dispatcher.terminate().await;
        public_web && listener && dispatcher
    }
}

/// The value of the Prometheus sample `name{labels…}` in `exposition`.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let (series, _) = line.rsplit_once(' ').unwrap_or((line, ""));
            let metric = series.split('{').next().unwrap_or_default();
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}

/// The base names of the metrics in `exposition` (histogram series folded).
pub fn metric_names(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}
