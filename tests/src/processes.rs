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
use crate::netns::Host;
pub use crate::ports::free_port;

/// `target/<profile>/`, where the test binary's `deps/` folder lives.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of a workspace binary. The service binaries and `req` are
/// (re)built once per test process, so a test never runs a stale build;
/// when they are up to date that is a no-op.
pub fn binary(name: &str) -> PathBuf {
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
            "-p",
            "req",
            "-p",
            "webhook-sender",
        ]);
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the service binaries failed");
    });
    target_dir().join(name)
}

/// A running service process; killed when dropped.
pub struct ServiceProcess {
    pub name: &'static str,
    pub port: u16,
    /// Where it listens: loopback, or the address of its [`Host`].
    address: std::net::Ipv4Addr,
    child: Child,
    /// Lines the process wrote to stdout, as they come.
    pub stdout: mpsc::UnboundedReceiver<String>,
}

impl ServiceProcess {
    pub async fn spawn(name: &'static str, port: u16, env: &[(String, String)]) -> Self {
        Self::spawn_with_fd_limit(name, port, env, None).await
    }

    /// [`spawn`](Self::spawn) on `host`, another machine as far as the
    /// network goes; its internal listeners bind every address there.
    pub async fn spawn_on(
        host: &Host,
        name: &'static str,
        port: u16,
        env: &[(String, String)],
    ) -> Self {
        let mut env = env.to_vec();
        env.push(("INTERNAL_BIND_ADDR".to_owned(), "0.0.0.0".to_owned()));
        Self::start(
            host.async_command(binary(name)),
            host.address(),
            name,
            port,
            &env,
        )
    }

    /// [`spawn`](Self::spawn), with the process's file-descriptor limit
    /// lowered to `fd_limit` when given.
    pub async fn spawn_with_fd_limit(
        name: &'static str,
        port: u16,
        env: &[(String, String)],
        fd_limit: Option<u64>,
    ) -> Self {
        let mut command = Command::new(binary(name));
        if let Some(limit) = fd_limit {
            // SAFETY: between fork and exec the closure only calls
            // setrlimit, which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let lowered = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        Self::start(command, std::net::Ipv4Addr::LOCALHOST, name, port, env)
    }

    fn start(
        mut command: Command,
        address: std::net::Ipv4Addr,
        name: &'static str,
        port: u16,
        env: &[(String, String)],
    ) -> Self {
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("CALLBACK_SECRET", crate::TEST_SECRET)
            .env("CALLBACK_ALLOW", "127.0.0.0/8")
            // Tests start listeners late and on purpose.
            .env("NO_LISTENER_GRACE_MS", "600000")
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
            address,
            child,
            stdout,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.address, self.port)
    }

    /// Sends SIGTERM and waits for the process; returns whether it exited 0.
    pub async fn terminate(mut self) -> bool {
        let pid = self.child.id().expect("running").to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        // Generous: draining and the last telemetry flush share two cores
        // with every other test of the suite.
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("the service exits within 40 s of SIGTERM")
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
            ("EVENT_STREAM".to_owned(), topology.stream.clone()),
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

/// Fault injection and measurement on a running service process.
impl ServiceProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT, KILL...).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// SIGKILLs the process (no shutdown of any kind) and reaps it.
    pub async fn kill(mut self) {
        self.signal("KILL");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("a SIGKILLed process is gone within 10 s")
            .expect("wait");
    }

    /// The process's resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the process's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url()))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics body")
    }
}

/// `(name, value)` pairs as the owned environment [`ServiceProcess::spawn`]
/// takes.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A dispatcher process routing `PingRequest` to `topology`'s request
/// queue, and a public-web process in front of it, both ready; each also
/// gets `extra` in its environment. Returns (dispatcher, public-web).
pub async fn spawn_front_processes(
    topology: &Topology,
    extra: &[(String, String)],
) -> (ServiceProcess, ServiceProcess) {
    let mut dispatcher_env = env(&[
        ("AMQP_URL", &crate::amqp_url()),
        ("ROUTES", &format!("PingRequest={}", topology.request_queue)),
        ("RESPONSE_QUEUE", &topology.response_queue),
        ("EVENT_STREAM", &topology.stream),
    ]);
    dispatcher_env.extend_from_slice(extra);
    let dispatcher = ServiceProcess::spawn("dispatcher", free_port(), &dispatcher_env).await;
    let public_web = spawn_public_web_process(free_port(), &dispatcher.url(), extra).await;
    crate::wait_ready(&dispatcher.url()).await;
    crate::wait_ready(&public_web.url()).await;
    (dispatcher, public_web)
}

/// A public-web process on `port` forwarding to `dispatcher_url`, with
/// `extra` in its environment; not waited for.
pub async fn spawn_public_web_process(
    port: u16,
    dispatcher_url: &str,
    extra: &[(String, String)],
) -> ServiceProcess {
    let mut public_web_env = env(&[("DISPATCHER_URL", dispatcher_url)]);
    public_web_env.extend_from_slice(extra);
    ServiceProcess::spawn("public-web", port, &public_web_env).await
}
