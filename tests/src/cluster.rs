//! A three-node RabbitMQ cluster of the test's own, each node on its own
//! [`Host`] (network namespace), joined with `rabbitmqctl join_cluster` as
//! an operator would: the broker side of "past one machine".
//!
//! The nodes run with the settings a cluster of this platform should run
//! with ([`CLUSTER_CONFIG`]): `pause_minority`, so a node cut off from the
//! majority stops serving (its clients fail over to the majority) and
//! rejoins by itself once the network heals; and a short Erlang tick, so
//! peers notice a lost node within seconds rather than a minute.

use std::time::Duration;

use crate::netns::{Host, Network};
use crate::private_broker::PrivateBroker;

/// What every node of a test cluster adds to its rabbitmq.conf.
pub const CLUSTER_CONFIG: &str = "\
cluster_partition_handling = pause_minority
";

/// The Erlang distribution's tick: a peer silent for about this long is
/// down. The default (60 s) would stretch every partition test by a minute.
const ADVANCED_CONFIG: &str = "[{kernel, [{net_ticktime, 4}]}].\n";

/// How long a node that paused may take to boot again after the heal
/// before it counts as hung: it has taken 10–120 s beside the rest of the
/// suite.
const BOOT_AFTER_HEAL: Duration = Duration::from_secs(60);

/// Three joined nodes; see the module documentation.
pub struct Cluster {
    pub nodes: Vec<PrivateBroker>,
    pub hosts: Vec<Host>,
}

impl Cluster {
    /// Boots a node on each of three new hosts of `network` (addresses
    /// `first`, `first + 1`, `first + 2`), joins the second and third to
    /// the first, and waits until all three run.
    pub async fn launch(network: &Network, first: u8) -> Self {
        let cookie = uuid::Uuid::new_v4().simple().to_string();
        let hosts: Vec<Host> = (0..3).map(|i| network.host(first + i)).collect();
        let mut nodes: Vec<PrivateBroker> = hosts
            .iter()
            .map(|host| PrivateBroker::on_host(host, &cookie, CLUSTER_CONFIG))
            .collect();
        for node in &nodes {
            node.write_advanced_config(ADVANCED_CONFIG);
        }
        futures_util::future::join_all(nodes.iter_mut().map(PrivateBroker::start)).await;
        let seed = nodes[0].node().to_owned();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]).await;
            node.ctl(&["join_cluster", &seed]).await;
            node.ctl(&["start_app"]).await;
        }
        let cluster = Self { nodes, hosts };
        cluster.wait_running(3, Duration::from_secs(60)).await;
        cluster
    }

    /// Every node's AMQP URL, comma-separated, as `AMQP_URLS` takes them,
    /// with a 2 s heartbeat: a client gives up on a silent (cut off) node
    /// after twice that, well within a publish's time budget.
    pub fn amqp_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("{}?heartbeat=2", node.amqp_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A node that runs, other than `except`, to ask things.
    fn witness(&self, except: Option<usize>) -> &PrivateBroker {
        self.nodes
            .iter()
            .enumerate()
            .find(|(i, node)| Some(*i) != except && node.is_running())
            .map(|(_, node)| node)
            .expect("a running node")
    }

    /// The index of the node that leads quorum queue `queue`.
    pub async fn leader(&self, queue: &str) -> usize {
        let listing = self
            .witness(None)
            .ctl(&[
                "list_queues",
                "name",
                "leader",
                "--quiet",
                "--no-table-headers",
            ])
            .await;
        let leader = listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, leader)| leader.trim().to_owned())
            .unwrap_or_else(|| panic!("{queue} is not listed:\n{listing}"));
        self.nodes
            .iter()
            .position(|node| node.node() == leader)
            .unwrap_or_else(|| panic!("{queue}'s leader {leader} is not a node of the cluster"))
    }

    /// How many nodes hold a replica of `queue` (a quorum queue or a
    /// stream).
    pub async fn replicas(&self, queue: &str) -> usize {
        let listing = self
            .witness(None)
            .ctl(&[
                "list_queues",
                "name",
                "members",
                "--quiet",
                "--no-table-headers",
            ])
            .await;
        listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, members)| members.matches('@').count())
            .unwrap_or_else(|| panic!("{queue} is not listed:\n{listing}"))
    }

    /// Waits until `count` nodes are running in the cluster, as a node
    /// other than those stopped sees it, each with its broker started.
    pub async fn wait_running(&self, count: usize, limit: Duration) {
        self.wait_listed(count, limit).await;
        // A node that paused (pause_minority) counts as running before its
        // broker has started again: wait for that too.
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            node.ctl_within(
                &["await_startup", "--timeout", "150"],
                Duration::from_secs(160),
            )
            .await;
        }
    }

    /// Waits until `count` nodes are listed as running, as a node other
    /// than those stopped sees it, whether or not their brokers have
    /// finished booting.
    async fn wait_listed(&self, count: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let running = self.running_nodes(None).await;
            if running == count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{running} nodes running, not {count}, after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until node `paused`, which paused in a partition that has
    /// healed, runs in the cluster again; whether it had to be restarted.
    ///
    /// On RabbitMQ 3.10 with Erlang 25 the paused node's boot after the heal
    /// sometimes never ends: it waits on the Erlang `global` name server,
    /// and RabbitMQ's own workaround ("Faking nodedown/nodeup" in its log)
    /// does not free it. The operator's remedy is a restart, and that is
    /// what happens here after [`BOOT_AFTER_HEAL`], said in the test's
    /// output; the majority serves meanwhile.
    pub async fn rejoin(&mut self, paused: usize) -> bool {
        self.wait_listed(3, Duration::from_secs(90)).await;
        if self.nodes[paused].booted_within(BOOT_AFTER_HEAL).await {
            return false;
        }
        let node = &mut self.nodes[paused];
        eprintln!(
            "cluster figures: {}'s boot did not end within {BOOT_AFTER_HEAL:?} of the heal; restarting it. Its log:\n{}",
            node.node(),
            node.log_events(12).join("\n")
        );
        node.kill();
        node.start().await;
        self.wait_running(3, Duration::from_secs(90)).await;
        true
    }

    /// Waits until the other nodes see node `gone` no longer running.
    pub async fn wait_running_without(&self, gone: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let running = self.running_names(Some(gone)).await;
            if !running.contains(&self.nodes[gone].node().to_owned()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still running, as the others see it, after {limit:?}: {running:?}",
                self.nodes[gone].node()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// How many nodes the first running node other than `except` sees
    /// running (`rabbitmqctl cluster_status`).
    pub async fn running_nodes(&self, except: Option<usize>) -> usize {
        self.running_names(except).await.len()
    }

    /// The nodes the first running node other than `except` sees running.
    /// Asked of that node alone: `cluster_status` would also ask the
    /// others, and wait half a minute for one that is cut off.
    async fn running_names(&self, except: Option<usize>) -> Vec<String> {
        let running = self
            .witness(except)
            .ctl(&["eval", "rabbit_nodes:all_running()."])
            .await;
        // An Erlang list of atoms: ['rabbit@10.200.3.12','rabbit@…'].
        running
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }
}
