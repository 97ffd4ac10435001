//! Hosts of the test's own: Linux network namespaces on one bridge, so a
//! test can run a broker node or a service replica "on another machine"
//! (its own address, its own ports, its own loopback) and cut a host off
//! the network, as a partition does, without touching the machine's own
//! interfaces.
//!
//! A [`Network`] is a bridge with a private /24 of its own (10.200.x.0 to
//! 10.249.x.0, picked at random and checked free) whose first address is
//! the test's, in the machine's namespace: the test reaches every host, as
//! a client would. Each [`Host`] is a namespace with a veth pair into the
//! bridge. On drop every process left in the namespaces is killed and the
//! namespaces, veths and bridge are removed, even when the test panicked.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A bridge and the hosts on it; see the module documentation.
pub struct Network {
    id: String,
    bridge: String,
    subnet: [u8; 3],
    /// Each host's namespace and the bridge end of its veth pair.
    hosts: Mutex<Vec<(String, String)>>,
}

impl Network {
    /// A new bridge on a free private /24, the test's address on it.
    pub fn create() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let bridge = format!("itbr{id}");
        let taken = ip_output(&["-4", "-o", "addr", "show"]);
        let subnet = loop {
            let random = uuid::Uuid::new_v4().as_u128();
            let subnet = [10, 200 + (random % 50) as u8, ((random >> 8) % 256) as u8];
            let prefix = format!("inet {}.{}.{}.", subnet[0], subnet[1], subnet[2]);
            if !taken.contains(&prefix) {
                break subnet;
            }
        };
        let network = Self {
            id,
            bridge,
            subnet,
            hosts: Mutex::new(Vec::new()),
        };
        ip(&["link", "add", &network.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.address(1)),
            "dev",
            &network.bridge,
        ]);
        ip(&["link", "set", &network.bridge, "up"]);
        network
    }

    /// The address `last` of the network's /24.
    pub fn address(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, last)
    }

    /// The test's own address on the bridge, reachable from every host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// The network as a CIDR, for allow-lists.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.address(0))
    }

    /// A new host on the network, at address `last` (2 to 254, one host
    /// per address).
    pub fn host(&self, last: u8) -> Host {
        assert!((2..=254).contains(&last), "host addresses are .2 to .254");
        let namespace = format!("it{}h{last}", self.id);
        // Interface names are at most 15 bytes.
        let veth = format!("itv{}{last}", &self.id[..6]);
        ip(&["netns", "add", &namespace]);
        self.hosts
            .lock()
            .expect("hosts lock")
            .push((namespace.clone(), veth.clone()));
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
        ]);
        ip(&["link", "set", &veth, "master", &self.bridge]);
        ip(&["link", "set", &veth, "up"]);
        let host = Host {
            namespace,
            veth,
            address: self.address(last),
        };
        host.ip(&[
            "addr",
            "add",
            &format!("{}/24", host.address),
            "dev",
            "eth0",
        ]);
        host.ip(&["link", "set", "eth0", "up"]);
        host.ip(&["link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let hosts = std::mem::take(&mut *self.hosts.lock().expect("hosts lock"));
        for (namespace, _) in &hosts {
            for pid in ip_output(&["netns", "pids", namespace]).split_whitespace() {
                // Some may have exited since the listing.
                let _ = Command::new("kill")
                    .args(["-KILL", pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for (namespace, veth) in &hosts {
            let _ = quiet_ip(&["netns", "del", namespace]);
            // The pair goes with its namespace, but not always at once.
            let _ = quiet_ip(&["link", "del", veth]);
        }
        let _ = quiet_ip(&["link", "del", &self.bridge]);
    }
}

/// One namespace on a [`Network`]: a host with its own address.
#[derive(Debug, Clone)]
pub struct Host {
    namespace: String,
    veth: String,
    address: Ipv4Addr,
}

impl Host {
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// `program` to run inside this host: `ip netns exec <ns> program`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(program);
        command
    }

    /// The tokio flavour of [`command`](Self::command).
    pub fn async_command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        tokio::process::Command::from(self.command(program))
    }

    /// Cuts the host off the network (its cable pulled): packets to and
    /// from it are dropped, connections hang rather than close.
    pub fn cut(&self) {
        ip(&["link", "set", &self.veth, "down"]);
    }

    /// Plugs the host back in.
    pub fn heal(&self) {
        ip(&["link", "set", &self.veth, "up"]);
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

/// Runs `ip args…`, panicking with its error output when it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's ip runs (network namespaces need root)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

fn quiet_ip(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}
