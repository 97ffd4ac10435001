//! A RabbitMQ node of the test's own, so a test can stop and start "the
//! broker" for real — the node closes every connection, as a restart does —
//! without touching the machine's shared node on 5672.
//!
//! The node gets a unique name, free AMQP and distribution ports on
//! loopback, and a temporary directory for its data, logs, Erlang cookie,
//! config and plugin list (empty: no management listener). Nothing is read
//! from `/etc/rabbitmq`, so the shared node's settings cannot leak in. On
//! drop the node's whole process group is killed and the directory removed,
//! even when the test panicked.
//!
//! A node can also live on a [`Host`] of the test's own (a network
//! namespace): then it is `rabbit@<address>` (long names), listens on the
//! standard ports of that address, lets `guest` in from other hosts, and
//! takes the cluster settings it is given: the cluster harness joins three
//! such nodes.
//!
//! A node start takes about 7–8 s on a 2-core machine, so a test should
//! start one as few times as it can.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::netns::Host;
use crate::ports::free_port;

/// How long a node may take to boot before the test gives up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A private RabbitMQ node; see the module documentation.
pub struct PrivateBroker {
    node: String,
    /// Where its AMQP listener is.
    address: std::net::Ipv4Addr,
    amqp_port: u16,
    /// The namespace it runs in, if not the machine's.
    host: Option<Host>,
    dir: PathBuf,
    scripts: PathBuf,
    env: Vec<(String, String)>,
    server: Option<Child>,
}

impl PrivateBroker {
    /// Starts a fresh node on loopback and waits until it completes AMQP
    /// handshakes.
    pub async fn launch() -> Self {
        let mut broker = Self::prepare(None, None, "");
        broker.start().await;
        broker
    }

    /// A fresh node on `host` with Erlang cookie `cookie` and `config`
    /// (rabbitmq.conf lines) added to its own; not started.
    pub fn on_host(host: &Host, cookie: &str, config: &str) -> Self {
        Self::prepare(Some(host.clone()), Some(cookie), config)
    }

    fn prepare(host: Option<Host>, cookie: Option<&str>, config: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("it-rabbitmq-{id}"));
        std::fs::create_dir_all(&dir).expect("the node's directory");
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let (node, address, amqp_port, dist_port) = match &host {
            // Its own network stack: the standard ports are free.
            Some(host) => (
                format!("rabbit@{}", host.address()),
                host.address(),
                5672,
                25672,
            ),
            None => (
                format!("it-{}@localhost", &id[..12]),
                std::net::Ipv4Addr::LOCALHOST,
                free_port(),
                free_port(),
            ),
        };
        // Our own (empty) env file and config: /etc/rabbitmq's would name
        // the shared node and its listener.
        std::fs::write(dir.join("rabbitmq-env.conf"), "").expect("env file");
        let mut conf = String::new();
        if host.is_some() {
            // Clients come from other hosts.
            conf.push_str("loopback_users = none\n");
        }
        conf.push_str(config);
        std::fs::write(dir.join("rabbitmq.conf"), conf).expect("config file");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        if let Some(cookie) = cookie {
            let file = dir.join(".erlang.cookie");
            std::fs::write(&file, cookie).expect("cookie file");
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o400))
                .expect("cookie permissions");
        }
        let mut env: Vec<(&str, String)> = vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("LANG", "C.UTF-8".to_owned()),
            ("LC_ALL", "C.UTF-8".to_owned()),
            // The Erlang cookie is created in, and read from, $HOME.
            ("HOME", path("")),
            ("RABBITMQ_NODENAME", node.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", address.to_string()),
            ("RABBITMQ_NODE_PORT", amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_PID_FILE", path("node.pid")),
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_PLUGINS_EXPAND_DIR", path("plugins-expand")),
        ];
        match &host {
            // Named by address; its namespace's epmd answers on it.
            Some(_) => env.push(("RABBITMQ_USE_LONGNAME", "true".to_owned())),
            None => env.extend([
                ("ERL_EPMD_ADDRESS", "127.0.0.1".to_owned()),
                (
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                    "-kernel inet_dist_use_interface {127,0,0,1}".to_owned(),
                ),
            ]),
        }
        Self {
            node,
            address,
            amqp_port,
            host,
            dir,
            scripts: scripts_dir(),
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            server: None,
        }
    }

    /// Writes the node's advanced.config (Erlang terms), read at its next
    /// start.
    pub fn write_advanced_config(&self, terms: &str) {
        std::fs::write(self.dir.join("advanced.config"), terms).expect("advanced.config");
    }

    /// The node's name (`rabbit@10.200.3.11`, `it-…@localhost`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `rabbitmqctl -n <node> args…` where the node lives; its
    /// output, or a panic with its error output. A minute at most.
    pub async fn ctl(&self, args: &[&str]) -> String {
        self.ctl_within(args, Duration::from_secs(60)).await
    }

    /// [`ctl`](Self::ctl) for a command that may take up to `limit`; past
    /// it, a panic with the end of the node's log.
    pub async fn ctl_within(&self, args: &[&str], limit: Duration) -> String {
        let output = self
            .script(self.scripts.join("rabbitmqctl"))
            .args(["-n", &self.node])
            .args(args)
            .output();
        let output = tokio::time::timeout(limit, output)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "rabbitmqctl {args:?} on {} hung for {limit:?}; its log ends:\n{}",
                    self.node,
                    self.log_events(40).join("\n")
                )
            })
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} on {}: {}{}\nits log ends:\n{}",
            self.node,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_events(60).join("\n")
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether the node's broker finishes booting within `limit`
    /// (`rabbitmqctl await_startup`): a node that paused (pause_minority)
    /// boots again by itself once the network heals.
    pub async fn booted_within(&self, limit: Duration) -> bool {
        let seconds = limit.as_secs().to_string();
        let output = self
            .script(self.scripts.join("rabbitmqctl"))
            .args(["-n", &self.node, "await_startup", "--timeout", &seconds])
            .output();
        matches!(
            tokio::time::timeout(limit + Duration::from_secs(10), output).await,
            Ok(Ok(output)) if output.status.success()
        )
    }

    /// `program` (one of RabbitMQ's scripts) with the node's environment,
    /// in its namespace.
    fn script(&self, program: PathBuf) -> tokio::process::Command {
        let mut command = match &self.host {
            Some(host) => host.async_command(program),
            None => tokio::process::Command::new(program),
        };
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }

    /// The node's AMQP URL (guest).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}:{}/%2f", self.address, self.amqp_port)
    }

    /// Starts the (stopped) node and waits until it completes AMQP
    /// handshakes. Panics, with the end of its log, if it does not boot.
    pub async fn start(&mut self) {
        assert!(self.server.is_none(), "the node is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("the server log");
        let program = self.scripts.join("rabbitmq-server");
        let mut command = match &self.host {
            Some(host) => host.command(program),
            None => Command::new(program),
        };
        let server = command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            // Its own group, so Drop can kill the shell, the VM and the
            // VM's helpers in one go.
            .process_group(0)
            .spawn()
            .expect("rabbitmq-server starts");
        self.server = Some(server);

        let deadline = tokio::time::Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(status) = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten())
            {
                self.server = None;
                panic!(
                    "the private RabbitMQ node exited during boot ({status}):\n{}",
                    self.log_tail()
                );
            }
            if self.answers().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the private RabbitMQ node did not boot within {BOOT_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the node with `rabbitmqctl stop` (it closes every client
    /// connection, then the VM halts) and waits until its process is gone.
    pub async fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            panic!("the node is not running");
        };
        let stopped = self
            .script(self.scripts.join("rabbitmqctl"))
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let stopped = tokio::time::timeout(Duration::from_secs(30), stopped).await;
        if !matches!(stopped, Ok(Ok(status)) if status.success()) {
            kill_group(&mut server);
            panic!(
                "rabbitmqctl stop failed ({stopped:?}):\n{}",
                self.log_tail()
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while server.try_wait().expect("wait on the node").is_none() {
            if tokio::time::Instant::now() >= deadline {
                kill_group(&mut server);
                panic!("the node did not exit within 30 s of rabbitmqctl stop");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the node's VM at once (SIGKILL), as a crashed machine: no
    /// connection is closed, no peer is told.
    pub fn kill(&mut self) {
        let mut server = self.server.take().expect("the node is running");
        kill_group(&mut server);
    }

    /// Whether the node's VM is running.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Deletes the stopped node's data, so its next start is a broker with
    /// no queues at all, as one whose disk was lost or replaced.
    pub fn wipe_data(&self) {
        assert!(
            self.server.is_none(),
            "stop the node before wiping its data"
        );
        std::fs::remove_dir_all(self.dir.join("mnesia")).expect("remove the node's data");
    }

    /// Whether the node completes an AMQP handshake right now.
    async fn answers(&self) -> bool {
        let url = self.amqp_url();
        let connect = Connection::connect(&url, ConnectionProperties::default());
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(connection)) => {
                common::amqp::connection::close(&connection).await;
                true
            }
            _ => false,
        }
    }

    /// The last `count` lines of the node's log other than its client
    /// connections opening and closing: partitions, elections, alarms.
    pub fn log_events(&self, count: usize) -> Vec<String> {
        let log = self.dir.join("log").join(format!("{}.log", self.node));
        let content = std::fs::read_to_string(log).unwrap_or_default();
        let events: Vec<String> = content
            .lines()
            .filter(|line| {
                ![
                    "accepting AMQP connection",
                    "authenticated and granted",
                    "closing AMQP connection",
                ]
                .iter()
                .any(|noise| line.contains(noise))
            })
            .map(str::to_owned)
            .collect();
        events[events.len().saturating_sub(count)..].to_vec()
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for log in [
            self.dir.join("server.log"),
            self.dir.join("log").join(format!("{}.log", self.node)),
        ] {
            let content = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            text.push_str(&format!("--- {}\n{tail}\n", log.display()));
        }
        text
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            kill_group(&mut server);
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}

/// SIGKILLs the process group `server` leads and reaps its leader.
fn kill_group(server: &mut Child) {
    let group = format!("-{}", server.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = server.wait();
}

/// Where the real `rabbitmq-server` and `rabbitmqctl` scripts live: Debian
/// keeps them in /usr/lib/rabbitmq/bin (its /usr/sbin ones switch to the
/// rabbitmq user and its home, which would share the system node's cookie
/// and directory); elsewhere, the directory of `rabbitmq-server` on PATH.
fn scripts_dir() -> PathBuf {
    let debian = Path::new("/usr/lib/rabbitmq/bin");
    if debian.join("rabbitmq-server").exists() {
        return debian.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("rabbitmq-server").exists())
        .expect("a private RabbitMQ node needs rabbitmq-server installed (bin/test installs it)")
}
