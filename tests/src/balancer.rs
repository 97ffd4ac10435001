//! A TCP load balancer standing in for a Kubernetes Service in front of
//! replicas on other hosts: each new connection goes to the next backend in
//! turn, and to the one after when a backend refuses or does not answer
//! the connect, as kube-proxy's endpoints drop a dead pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a connect to one backend may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A running balancer; it stops when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Listens on `bind` (port 0: any) and spreads connections over
    /// `backends`.
    pub async fn start(bind: SocketAddr, backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind(bind).await.expect("the balancer binds");
        let addr = listener.local_addr().expect("a bound address");
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (backends, next) = (backends.clone(), next.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for turn in 0..backends.len() {
                        let backend = backends[(first + turn) % backends.len()];
                        let connected =
                            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend))
                                .await;
                        if let Ok(Ok(mut outbound)) = connected {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
