//! Past one machine: a three-node RabbitMQ cluster with quorum queues, and
//! the platform's replicas on hosts of their own (network namespaces),
//! under a steady load through both public-webs while nodes and replicas
//! fail.
//!
//! Each test prints its figures (requests, answers by status, time to
//! recover) for RELIABILITY.md. A request is lost when its client got no
//! answer at all (a transport error) or only a timeout: every other answer
//! says what happened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::balancer::Balancer;
use integration_tests::cluster::Cluster;
use integration_tests::netns::{Host, Network};
use integration_tests::processes::{ServiceProcess, env, metric_value};
use integration_tests::*;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// public-web's port on its host, and its `/dispatch` port.
const PUBLIC_WEB_PORT: u16 = 3000;
const DISPATCH_PORT: u16 = 3100;
const DISPATCHER_PORT: u16 = 3001;
const LISTENER_PORT: u16 = 3002;

/// The platform on six hosts: three broker nodes, and service hosts
/// `a` (public-web, dispatcher, ping-listener), `b` (the same) and `c`
/// (a third ping-listener). The test's own address stands in for the
/// dispatchers' Service (a [`Balancer`]).
struct Platform {
    topology: Topology,
    public_webs: Vec<ServiceProcess>,
    dispatchers: Vec<ServiceProcess>,
    listeners: Vec<ServiceProcess>,
    service_hosts: Vec<Host>,
    _balancer: Balancer,
    cluster: Cluster,
    network: Network,
}

impl Platform {
    async fn start() -> Self {
        let network = Network::create();
        let cluster = Cluster::launch(&network, 11).await;
        let service_hosts: Vec<Host> = (21..24).map(|last| network.host(last)).collect();
        let topology = Topology::new();
        let balancer = Balancer::start(
            SocketAddr::from((network.gateway(), 0)),
            service_hosts[..2]
                .iter()
                .map(|host| SocketAddr::from((host.address(), DISPATCHER_PORT)))
                .collect(),
        )
        .await;
        let mut platform = Self {
            topology,
            public_webs: Vec::new(),
            dispatchers: Vec::new(),
            listeners: Vec::new(),
            service_hosts,
            _balancer: balancer,
            cluster,
            network,
        };
        for host in platform.service_hosts.clone()[..2].iter() {
            let dispatcher = platform.spawn_dispatcher(host).await;
            platform.dispatchers.push(dispatcher);
        }
        for host in platform.service_hosts.clone().iter() {
            let listener = ServiceProcess::spawn_on(
                host,
                "ping-listener",
                LISTENER_PORT,
                &platform.env(&[("QUEUE", &platform.topology.request_queue)]),
            )
            .await;
            platform.listeners.push(listener);
        }
        for index in 0..2 {
            let public_web = platform.spawn_public_web(index).await;
            platform.public_webs.push(public_web);
        }
        for service in platform
            .dispatchers
            .iter()
            .chain(&platform.listeners)
            .chain(&platform.public_webs)
        {
            wait_ready(&service.url()).await;
        }
        platform
    }

    /// What every service gets: the cluster's nodes, quorum queues, the
    /// test network as the callback allow-list, publish timeouts that cover
    /// a failover (a lost node noticed and new leaders elected, about 10 s)
    /// twice, as docs/scaling.md's timeout rule asks; and `extra`.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let urls = self.cluster.amqp_urls();
        let cidr = self.network.cidr();
        let mut pairs = vec![
            ("AMQP_URLS", urls.as_str()),
            ("QUEUE_TYPE", "quorum"),
            ("CALLBACK_ALLOW", cidr.as_str()),
            ("PUBLISH_TIMEOUT_MS", "20000"),
            ("DISPATCHER_TIMEOUT_MS", "20000"),
            ("REQUEST_TIMEOUT_MS", "22000"),
        ];
        pairs.extend_from_slice(extra);
        let mut all = env(&pairs);
        all.extend(stream_env(&self.topology.stream));
        all
    }

    async fn spawn_dispatcher(&self, host: &Host) -> ServiceProcess {
        let routes = format!("PingRequest={}", self.topology.request_queue);
        let env = self.env(&[
            ("ROUTES", &routes),
            ("RESPONSE_QUEUE", &self.topology.response_queue),
        ]);
        ServiceProcess::spawn_on(host, "dispatcher", DISPATCHER_PORT, &env).await
    }

    /// public-web on service host `index`, calling back to its own
    /// address.
    async fn spawn_public_web(&self, index: usize) -> ServiceProcess {
        let host = &self.service_hosts[index];
        let callback = format!("http://{}:{DISPATCH_PORT}/dispatch", host.address());
        let dispatcher = format!("http://{}", self._balancer.addr);
        let env = self.env(&[
            ("DISPATCHER_URL", &dispatcher),
            ("CALLBACK_URL", &callback),
            ("DISPATCH_PORT", &DISPATCH_PORT.to_string()),
        ]);
        ServiceProcess::spawn_on(host, "public-web", PUBLIC_WEB_PORT, &env).await
    }

    fn public_web_urls(&self) -> Vec<String> {
        self.public_webs.iter().map(ServiceProcess::url).collect()
    }

    /// Every service ready again within `limit`.
    async fn wait_all_ready(&self, limit: Duration) {
        let client = reqwest::Client::new();
        for service in self
            .dispatchers
            .iter()
            .chain(&self.listeners)
            .chain(&self.public_webs)
        {
            let url = format!("{}/readyz", service.url());
            wait_for(&format!("{url} ready"), limit, || async {
                client
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
        }
    }

    /// What to show with a failed assertion: every line the services
    /// logged since the last call that is a warning or an error or names a
    /// request of `report` that failed (its trail through the hops), then
    /// what each node logged besides its client connections.
    fn diagnosis(&mut self, report: &Report) -> String {
        let failed = report.failed_ids();
        let mut lines = Vec::new();
        for service in self
            .public_webs
            .iter_mut()
            .chain(&mut self.dispatchers)
            .chain(&mut self.listeners)
        {
            for line in service.drain_stdout() {
                if line.contains(" WARN ")
                    || line.contains(" ERROR ")
                    || failed.iter().any(|id| line.contains(id.as_str()))
                {
                    lines.push(format!("{}: {line}", service.name));
                }
            }
        }
        for node in &self.cluster.nodes {
            lines.push(format!("--- {}", node.node()));
            lines.extend(node.log_events(80));
        }
        lines.join("\n")
    }

    /// Every request of `report` answered by a ping; else the errors and
    /// what the services and nodes logged.
    fn assert_no_errors(&mut self, report: &Report) {
        self.assert_none_lost(report);
        if report.ok() != report.0.len() {
            panic!("{:?}\n{}", report.errors(), self.diagnosis(report));
        }
    }

    /// No request of `report` without an answer; else the errors and what
    /// the services and nodes logged.
    fn assert_none_lost(&mut self, report: &Report) {
        if report.lost() != 0 {
            panic!("{:?}\n{}", report.errors(), self.diagnosis(report));
        }
    }

    /// `name`'s samples summed over the dispatchers.
    async fn dispatcher_metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for dispatcher in &self.dispatchers {
            total += metric_value(&dispatcher.metrics().await, name, labels).unwrap_or(0.0);
        }
        total
    }

    async fn stop(self) {
        for service in self
            .public_webs
            .into_iter()
            .chain(self.dispatchers)
            .chain(self.listeners)
        {
            service.terminate().await;
        }
        drop(self.cluster);
        drop(self.network);
    }
}

/// One client request of a load run.
#[derive(Debug)]
struct Outcome {
    /// Which public-web it went to.
    target: usize,
    /// The event id it was sent with, to find its trail in the logs.
    id: String,
    started: Instant,
    elapsed: Duration,
    /// 0: no HTTP answer (transport error, or the client's own timeout).
    status: u16,
    /// The error code, or the transport error.
    code: String,
}

/// Clients sending pings one after the other, in turn to each public-web,
/// until stopped.
struct Load {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<Outcome>>,
}

impl Load {
    /// `clients` loops, client `i` to public-web `i % urls.len()`.
    fn start(urls: Vec<String>, clients: usize) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client");
            let loops: Vec<_> = (0..clients)
                .map(|i| {
                    let (client, stop) = (client.clone(), token.clone());
                    let target = i % urls.len();
                    let url = urls[target].clone();
                    tokio::spawn(async move {
                        let mut outcomes = Vec::new();
                        while !stop.is_cancelled() {
                            let id = uuid::Uuid::new_v4().to_string();
                            let mut body = ping_body();
                            body["id"] = Value::from(id.as_str());
                            let started = Instant::now();
                            let sent = client.post(&url).json(&body).send().await;
                            let (status, code) = match sent {
                                Ok(response) => {
                                    let status = response.status().as_u16();
                                    let body: Value = response.json().await.unwrap_or(Value::Null);
                                    let code = if status == 200 && body["type"] != "PingResponse" {
                                        format!("not a PingResponse: {body}")
                                    } else {
                                        body["error"]["code"].as_str().unwrap_or("").to_owned()
                                    };
                                    (status, code)
                                }
                                Err(error) => (0, error.to_string()),
                            };
                            outcomes.push(Outcome {
                                target,
                                id,
                                started,
                                elapsed: started.elapsed(),
                                status,
                                code,
                            });
                            tokio::time::sleep(PAUSE).await;
                        }
                        outcomes
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for client_loop in loops {
                outcomes.extend(client_loop.await.expect("a client loop"));
            }
            outcomes
        });
        Self { stop, task }
    }

    async fn finish(self) -> Report {
        self.stop.cancel();
        Report(self.task.await.expect("the load"))
    }
}

/// What a load run got.
struct Report(Vec<Outcome>);

impl Report {
    fn ok(&self) -> usize {
        self.0
            .iter()
            .filter(|o| o.status == 200 && o.code.is_empty())
            .count()
    }

    /// Answers other than a ping's, by status and code.
    fn errors(&self) -> BTreeMap<String, usize> {
        let mut errors = BTreeMap::new();
        for outcome in self
            .0
            .iter()
            .filter(|o| !(o.status == 200 && o.code.is_empty()))
        {
            let code: String = outcome.code.chars().take(80).collect();
            *errors
                .entry(format!("{} {code}", outcome.status))
                .or_default() += 1;
        }
        errors
    }

    /// The ids of the requests not answered by a ping.
    fn failed_ids(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|o| !(o.status == 200 && o.code.is_empty()))
            .map(|o| o.id.clone())
            .collect()
    }

    /// Requests that got no answer, or only a timeout.
    fn lost(&self) -> usize {
        self.0
            .iter()
            .filter(|o| o.status == 0 || o.status == 504)
            .count()
    }

    fn slowest(&self) -> Duration {
        self.0.iter().map(|o| o.elapsed).max().unwrap_or_default()
    }

    fn print(&self, what: &str) {
        eprintln!(
            "cluster figures: {what}: {} requests, {} ok, {} lost, errors {:?}, slowest {:?}",
            self.0.len(),
            self.ok(),
            self.lost(),
            self.errors(),
            self.slowest()
        );
    }
}

/// The clients of a load run, and each one's pause between two requests:
/// a steady load that leaves the machine's other tests their share.
const CLIENTS: usize = 6;
const PAUSE: Duration = Duration::from_millis(50);

/// Broker faults under load, one after the other on one cluster: the
/// request queue's leader killed, a node stopped and started, a node cut
/// off for 30 s, every connection closed at once. No request is lost, and
/// no client sees an error.
#[tokio::test]
async fn the_platform_rides_out_broker_node_failures_without_client_errors() {
    // Three RabbitMQ nodes and seven services are a large share of a small
    // machine: one cluster at a time.
    let _turn = MACHINE_SATURATING.lock().await;
    let mut platform = Platform::start().await;
    leader_node_killed(&mut platform).await;
    leader_node_stopped_and_started(&mut platform).await;
    leader_host_cut_off(&mut platform).await;
    every_connection_closed(&mut platform).await;
    platform.stop().await;
}

/// SIGKILL the node that leads the request queue, under load; then bring
/// it back.
async fn leader_node_killed(platform: &mut Platform) {
    let queue = platform.topology.request_queue.clone();
    for replicated in [
        &queue,
        &platform.topology.response_queue,
        &platform.topology.stream,
    ] {
        assert_eq!(
            platform.cluster.replicas(replicated).await,
            3,
            "{replicated} is on every node"
        );
    }
    let load = Load::start(platform.public_web_urls(), CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = platform.cluster.leader(&queue).await;
    platform.cluster.nodes[leader].kill();
    let killed = Instant::now();
    platform
        .cluster
        .wait_running_without(leader, Duration::from_secs(30))
        .await;
    let new_leader = platform.cluster.leader(&queue).await;
    assert_ne!(new_leader, leader, "the leader moved");
    let moved = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.finish().await;
    report.print(&format!(
        "leader node SIGKILLed (new leader listed {moved:?} after)"
    ));
    platform.assert_no_errors(&report);
    platform.cluster.nodes[leader].start().await;
    platform
        .cluster
        .wait_running(3, Duration::from_secs(60))
        .await;
    platform.wait_all_ready(Duration::from_secs(30)).await;
}

/// Stop the leader's node gracefully under load, and bring it back.
async fn leader_node_stopped_and_started(platform: &mut Platform) {
    let queue = platform.topology.request_queue.clone();
    let load = Load::start(platform.public_web_urls(), CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = platform.cluster.leader(&queue).await;
    platform.cluster.nodes[leader].stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    platform.cluster.nodes[leader].start().await;
    platform
        .cluster
        .wait_running(3, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    report.print("leader node stopped and started");
    platform.assert_no_errors(&report);
    platform.wait_all_ready(Duration::from_secs(30)).await;
}

/// Cut the leader's host off the network for 30 s under load, then heal:
/// the cut node pauses (pause_minority), its clients move to the
/// majority, and it rejoins by itself (or, when its boot hangs, after a
/// restart: see [`Cluster::rejoin`]).
async fn leader_host_cut_off(platform: &mut Platform) {
    let queue = platform.topology.request_queue.clone();
    let load = Load::start(platform.public_web_urls(), CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = platform.cluster.leader(&queue).await;
    platform.cluster.hosts[leader].cut();
    let cut = Instant::now();
    platform
        .cluster
        .wait_running_without(leader, Duration::from_secs(30))
        .await;
    let noticed = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed())).await;
    platform.cluster.hosts[leader].heal();
    let healed = Instant::now();
    let restarted = platform.cluster.rejoin(leader).await;
    let rejoined = healed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let how = if restarted {
        "its boot hung, so it was restarted, and"
    } else {
        "it"
    };
    report.print(&format!(
        "leader host cut off 30 s (majority noticed after {noticed:?}; after the heal {how} rejoined in {rejoined:?})"
    ));
    platform.assert_no_errors(&report);
    platform.wait_all_ready(Duration::from_secs(30)).await;
}

/// Close every connection of every service at once, under load.
async fn every_connection_closed(platform: &mut Platform) {
    let load = Load::start(platform.public_web_urls(), CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let blip = Instant::now();
    let closing = platform
        .cluster
        .nodes
        .iter()
        .map(|node| node.ctl(&["close_all_connections", "a blip"]));
    futures_util::future::join_all(closing).await;
    platform.wait_all_ready(Duration::from_secs(30)).await;
    let recovered = blip.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    report.print(&format!(
        "every connection closed (all ready again after {recovered:?})"
    ));
    platform.assert_no_errors(&report);
}

/// Replicas on separate hosts: every answer reaches the public-web that
/// parked its request; a public-web killed affects only its own clients and
/// its late answers are dropped after one `404` each; a dispatcher killed
/// loses no request, its unacked responses going to the other.
#[tokio::test]
async fn replicas_on_separate_hosts_fail_alone() {
    // Three RabbitMQ nodes and seven services are a large share of a small
    // machine: one cluster at a time.
    let _turn = MACHINE_SATURATING.lock().await;
    let mut platform = Platform::start().await;

    // Both public-webs get their own answers.
    let load = Load::start(platform.public_web_urls(), CLIENTS);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    report.print("steady, two of each");
    assert!(report.ok() > 0);
    platform.assert_no_errors(&report);
    for target in 0..2 {
        assert!(report.0.iter().any(|o| o.target == target));
    }

    // SIGKILL public-web a: only its clients notice; it comes back at the
    // same address, and the answers meant for the dead one are dropped
    // after a 404 each.
    let stale_before = platform
        .dispatcher_metric(
            "dispatcher_callback_failures_total",
            &[("reason", "unknown_id")],
        )
        .await;
    let load = Load::start(platform.public_web_urls(), CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = platform.public_webs.remove(0);
    killed.kill().await;
    let restarted = platform.spawn_public_web(0).await;
    wait_ready(&restarted.url()).await;
    let back = Instant::now();
    platform.public_webs.insert(0, restarted);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    report.print("public-web a SIGKILLed and restarted");
    let after: Vec<_> = report
        .0
        .iter()
        .filter(|o| o.target == 0 && o.started > back)
        .collect();
    assert!(!after.is_empty(), "public-web a served again");
    assert!(
        after.iter().all(|o| o.status == 200 && o.code.is_empty()),
        "the restarted public-web gets its answers at once: {after:?}"
    );
    let others: Vec<_> = report.0.iter().filter(|o| o.target == 1).collect();
    assert!(
        others.iter().all(|o| o.status == 200 && o.code.is_empty()),
        "public-web b's clients saw nothing: {:?}",
        others
            .iter()
            .filter(|o| o.status != 200)
            .collect::<Vec<_>>()
    );
    let stale = platform
        .dispatcher_metric(
            "dispatcher_callback_failures_total",
            &[("reason", "unknown_id")],
        )
        .await
        - stale_before;
    eprintln!("cluster figures: answers for the killed public-web dropped after a 404: {stale}");
    assert!(
        stale <= (CLIENTS / 2) as f64,
        "at most one 404 per request parked at the killed public-web, got {stale}"
    );

    // SIGKILL dispatcher a: no request is lost.
    let load = Load::start(platform.public_web_urls(), CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    platform.dispatchers.remove(0).kill().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.finish().await;
    report.print("dispatcher a SIGKILLed");
    platform.assert_none_lost(&report);
    let spawned = platform
        .spawn_dispatcher(&platform.service_hosts[0].clone())
        .await;
    platform.dispatchers.insert(0, spawned);
    platform.wait_all_ready(Duration::from_secs(30)).await;

    platform.stop().await;
}
