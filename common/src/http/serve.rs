//! Serving HTTP with the connection limits a production gateway has.
//!
//! `axum::serve` accepts every connection and keeps it for as long as the
//! peer likes: one header byte a second holds a connection forever, idle
//! keep-alive connections are never closed, and enough silent connections
//! exhaust the process's file descriptors until nothing, not even
//! `/healthz`, is answered. Here each server instead has:
//!
//! - a header timeout (`HEADER_TIMEOUT_MS`): a connection must deliver a
//!   request's headers within it, and its first request within it of
//!   being accepted (hyper's own timer for HTTP/1.1 headers, a watchdog
//!   here for the first request of either protocol);
//! - an idle timeout (`IDLE_TIMEOUT_MS`): a connection with no request in
//!   flight is closed after it. A connection's task is not woken at each
//!   request, only when a deadline could pass. hyper's header timer also runs while an
//!   HTTP/1.1 connection waits for its next request, so for HTTP/1.1 the
//!   shorter of the two applies;
//! - a cap on open connections (`MAX_CONNECTIONS`, by default what the
//!   file-descriptor limit allows after a reserve, [`FD_RESERVE`], for
//!   outgoing connections and files, so the process never runs out). At
//!   the cap a new connection displaces the connection that has been idle
//!   the longest (silent and slow connections are the oldest idle ones),
//!   and if every connection is busy it is answered `503` in JSON and
//!   closed;
//! - a header size limit (`MAX_HEADER_BYTES`), answered `431` in JSON.
//!
//! A request in flight (public-web's parked ones included) is never cut
//! off by these, nor by a shutdown: the server stops accepting, closes
//! idle connections and lets the others finish their requests.
//!
//! A connection upgraded to another protocol (a WebSocket) leaves hyper
//! but keeps its slot: the handler takes the request's [`UpgradeHold`] and
//! holds it for as long as the socket lives, so it counts against the cap
//! and is never displaced as idle. Such a handler watches for shutdown
//! itself.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::error::ApiError;
use crate::config::{self, ConfigError};

/// File descriptors kept free of inbound connections: outgoing
/// connections (the dispatcher, the broker, the collector), files, and
/// the one a refusal needs.
pub const FD_RESERVE: usize = 1024;

/// How long an idle connection being closed may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Refused connections being closed politely at once, at most.
const POLITE_REFUSALS: usize = 64;

/// How long a refused connection's input is read before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_millis(200);

/// What a refused connection is told, written as-is: the server is at its
/// cap, so nothing of the request is read or parsed.
const AT_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 79\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many open connections; retry\"}}";

/// The limits of one process's servers. Cloned, it shares the connection
/// cap: public-web's public and internal servers count against one.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// `HEADER_TIMEOUT_MS`.
    pub header_timeout: Duration,
    /// `IDLE_TIMEOUT_MS`.
    pub idle_timeout: Duration,
    /// `MAX_HEADER_BYTES`: the request line and headers.
    pub max_header_bytes: usize,
    connections: Arc<Connections>,
}

impl ServerLimits {
    pub fn new(
        header_timeout: Duration,
        idle_timeout: Duration,
        max_header_bytes: usize,
        max_connections: usize,
    ) -> Self {
        Self {
            header_timeout,
            idle_timeout,
            max_header_bytes,
            connections: Arc::new(Connections::new(max_connections)),
        }
    }

    /// The limits from the environment; raises the soft file-descriptor
    /// limit to the hard one first, since the default cap follows it.
    pub fn from_env() -> Result<Self, ConfigError> {
        let fd_limit = raise_fd_limit();
        let default_cap = fd_limit.saturating_sub(FD_RESERVE).max(64);
        let max_connections = config::parse_or("MAX_CONNECTIONS", default_cap)?;
        if max_connections > default_cap {
            return Err(ConfigError::invalid(
                "MAX_CONNECTIONS",
                &max_connections.to_string(),
                format!(
                    "more than the file-descriptor limit ({fd_limit}) allows after a reserve of {FD_RESERVE}"
                ),
            ));
        }
        Ok(Self::new(
            config::millis_or("HEADER_TIMEOUT_MS", 10_000)?,
            config::millis_or("IDLE_TIMEOUT_MS", 60_000)?,
            config::parse_or("MAX_HEADER_BYTES", 16 * 1024)?,
            max_connections,
        ))
    }

    /// The same limits for another server of the process, with a cap of
    /// its own (`max_connections`): public-web's internal port, so that a
    /// public port full of parked requests leaves `/dispatch` and the
    /// probes there reachable.
    pub fn apart(&self, max_connections: usize) -> Self {
        Self {
            connections: Arc::new(Connections::new(max_connections)),
            ..self.clone()
        }
    }

    fn builder(&self) -> Builder<TokioExecutor> {
        let mut builder = Builder::new(TokioExecutor::new());
        // hyper answers a header block beyond its read buffer with an empty
        // 431 of its own: the buffer is set far enough above our limit that
        // ours, in JSON, comes first. Its limit of 100 header fields stays:
        // a larger one costs every request (hyper allocates and clears room
        // for that many before parsing).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size((4 * self.max_header_bytes).max(64 * 1024));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_header_list_size(u32::try_from(4 * self.max_header_bytes).unwrap_or(u32::MAX));
        builder
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` fires, then
/// stops accepting, asks every connection to close once its requests are
/// answered, and waits for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let builder = Arc::new(limits.builder());
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(connection) = limits.connections.admit(limits.idle_timeout) else {
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let served = serve_connection(
            builder.clone(),
            stream,
            app.clone(),
            connection,
            limits.clone(),
            shutdown.clone(),
        );
        connections.spawn(served);
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// An `accept` that failed: the peer gave up (nothing to do), or the
/// process is out of descriptors or memory (back off, or the loop spins
/// on a listener that stays readable).
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    crate::metrics::http_connection_closed("accept_failed");
    tracing::error!(%error, "accepting a connection failed; backing off");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Tells a connection beyond the cap why, without parsing it, and closes
/// it. Closing a socket with unread input resets it, which can destroy the
/// answer before the client reads it; so the refusal half-closes, reads
/// what the client sent for a moment, then closes. At most
/// [`POLITE_REFUSALS`] at once, each at most [`REFUSAL_LINGER`]: beyond
/// that a refused connection is only closed.
fn refuse(mut stream: TcpStream) {
    static LINGERING: Semaphore = Semaphore::const_new(POLITE_REFUSALS);
    crate::metrics::http_connection_closed("refused");
    let _ = stream.try_write(AT_CAPACITY);
    let Ok(permit) = LINGERING.try_acquire() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// Serves one connection until it ends, the server shuts down, or a limit
/// closes it.
async fn serve_connection(
    builder: Arc<Builder<TokioExecutor>>,
    stream: TcpStream,
    app: Router,
    connection: Arc<Connection>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let service = TowerToHyperService::new(Tracked {
        app,
        connection: connection.clone(),
        max_header_bytes: limits.max_header_bytes,
    });
    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(served);
    let mut closing: Option<&'static str> = None;
    // When a connection being closed is dropped even if hyper has not
    // finished with it.
    let mut drop_at: Option<Instant> = None;
    loop {
        // Not woken at every request: while a request is in flight the
        // deadline is looked at again a header timeout later, unless the
        // connection becomes idle with an earlier deadline (`rearm`); an
        // idle connection's deadline only ever moves later.
        let check_at = connection.next_check(&limits);
        tokio::select! {
            _ = served.as_mut() => break,
            // Requests in flight are answered first: hyper closes the
            // connection after them (one mid-headers within the header
            // timeout).
            _ = shutdown.cancelled(), if closing.is_none() => {
                connection.close();
                served.as_mut().graceful_shutdown();
                closing = Some("shutdown");
            }
            // Its slot is wanted now: with nothing in flight, closed at
            // once; else after its requests, like a shutdown.
            _ = connection.displaced.cancelled(), if closing.is_none() => {
                closing = Some("displaced");
                if connection.close() == 0 {
                    break;
                }
                served.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(check_at), if closing.is_none() => {
                if let Some((at, why)) = connection.idle_deadline(&limits)
                    && at <= Instant::now()
                {
                    connection.close();
                    served.as_mut().graceful_shutdown();
                    closing = Some(why);
                    drop_at = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            _ = connection.rearm.notified(), if closing.is_none() => {}
            _ = tokio::time::sleep_until(drop_at.unwrap_or_else(Instant::now)),
                if drop_at.is_some() => break,
        }
    }
    if let Some(why) = closing {
        crate::metrics::http_connection_closed(why);
    }
}

/// The open connections of a process's servers, and which are idle.
#[derive(Debug)]
struct Connections {
    max: usize,
    open: AtomicUsize,
    /// Idle connections by when they became idle (a sequence number), so
    /// the longest idle is the first.
    idle: Mutex<BTreeMap<u64, CancellationToken>>,
    next: AtomicU64,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: AtomicUsize::new(0),
            idle: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// A slot for a new connection: a free one, or the one of the
    /// connection idle the longest, which is told to close. `None` when
    /// every connection is busy.
    fn admit(self: &Arc<Self>, idle_timeout: Duration) -> Option<Arc<Connection>> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            let longest_idle = self.idle.lock().expect("connections lock").pop_first();
            let Some((_, displaced)) = longest_idle else {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return None;
            };
            displaced.cancel();
        }
        crate::metrics::http_connections_open(self.open.load(Ordering::Relaxed));
        let connection = Arc::new(Connection {
            pool: self.clone(),
            idle_timeout,
            rearm: Notify::new(),
            state: Mutex::new(Activity {
                in_flight: 0,
                idle_key: None,
                idle_since: Instant::now(),
                served_any: false,
                closing: false,
                check_at: None,
            }),
            displaced: CancellationToken::new(),
        });
        connection.state().idle_key = Some(self.mark_idle(&connection.displaced));
        Some(connection)
    }

    fn mark_idle(&self, displaced: &CancellationToken) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.idle
            .lock()
            .expect("connections lock")
            .insert(key, displaced.clone());
        key
    }

    fn unmark_idle(&self, key: u64) {
        self.idle.lock().expect("connections lock").remove(&key);
    }
}

/// One open connection.
#[derive(Debug)]
struct Connection {
    pool: Arc<Connections>,
    state: Mutex<Activity>,
    /// Cancelled when a new connection takes this one's slot.
    displaced: CancellationToken,
    idle_timeout: Duration,
    /// Tells the connection's task that it became idle before the time it
    /// sleeps until, so it must look again sooner.
    rearm: Notify,
}

#[derive(Debug)]
struct Activity {
    in_flight: usize,
    /// Its entry among the idle connections, while it is idle and open.
    idle_key: Option<u64>,
    idle_since: Instant,
    served_any: bool,
    /// Being closed: never idle again, never displaced.
    closing: bool,
    /// When the connection's task next looks at its deadline.
    check_at: Option<Instant>,
}

impl Connection {
    fn state(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.state.lock().expect("connection lock")
    }

    /// When the connection is closed if nothing happens, and why: the
    /// header timeout before its first request, the idle timeout after.
    /// `None` while a request is in flight.
    fn idle_deadline(&self, limits: &ServerLimits) -> Option<(Instant, &'static str)> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        Some(if state.served_any {
            (state.idle_since + limits.idle_timeout, "idle")
        } else {
            (state.idle_since + limits.header_timeout, "header_timeout")
        })
    }

    /// When the connection's task should next look at its deadline, noted
    /// so that a request ending earlier than that can wake it.
    fn next_check(&self, limits: &ServerLimits) -> Instant {
        let check_at = match self.idle_deadline(limits) {
            Some((at, _)) => at,
            None => Instant::now() + limits.header_timeout,
        };
        self.state().check_at = Some(check_at);
        check_at
    }

    /// Marks the connection as closing (out of the idle connections for
    /// good); returns its requests in flight.
    fn close(&self) -> usize {
        let mut state = self.state();
        state.closing = true;
        if let Some(key) = state.idle_key.take() {
            self.pool.unmark_idle(key);
        }
        state.in_flight
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.served_any = true;
        if let Some(key) = state.idle_key.take() {
            self.pool.unmark_idle(key);
        }
        InFlight(self.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(key) = self.state().idle_key.take() {
            self.pool.unmark_idle(key);
        }
        let open = self.pool.open.fetch_sub(1, Ordering::AcqRel) - 1;
        crate::metrics::http_connections_open(open);
    }
}

/// A request in flight on a connection, until its response body is sent
/// (or dropped).
struct InFlight(Arc<Connection>);

/// The slot of a connection that asks to be upgraded, in the request's
/// extensions: a handler that takes the connection over (a WebSocket)
/// calls [`UpgradeHold::hold`] and keeps the guard while it uses it.
#[derive(Clone)]
pub struct UpgradeHold(Arc<Connection>);

/// A taken-over connection counted busy until dropped.
pub struct ConnectionHeld {
    _in_flight: InFlight,
}

impl UpgradeHold {
    pub fn hold(self) -> ConnectionHeld {
        ConnectionHeld {
            _in_flight: self.0.request_started(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let connection = &self.0;
        let mut state = connection.state();
        state.in_flight -= 1;
        if state.in_flight == 0 && !state.closing {
            let now = Instant::now();
            state.idle_since = now;
            state.idle_key = Some(connection.pool.mark_idle(&connection.displaced));
            let too_late = state
                .check_at
                .is_some_and(|check_at| now + connection.idle_timeout < check_at);
            drop(state);
            if too_late {
                connection.rearm.notify_one();
            }
        }
    }
}

/// The service of one connection: refuses oversized header blocks in JSON
/// and counts each request in flight until its response body ends.
#[derive(Clone)]
struct Tracked {
    app: Router,
    connection: Arc<Connection>,
    max_header_bytes: usize,
}

impl tower::Service<Request<hyper::body::Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let in_flight = self.connection.request_started();
        if header_bytes(&request) > self.max_header_bytes {
            let refusal = ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("request headers over {} bytes", self.max_header_bytes),
            );
            return Box::pin(std::future::ready(Ok(refusal.into_response())));
        }
        let mut request = request.map(Body::new);
        if request.headers().contains_key(axum::http::header::UPGRADE) {
            request
                .extensions_mut()
                .insert(UpgradeHold(self.connection.clone()));
        }
        let answered = self.app.clone().oneshot(request);
        Box::pin(async move {
            let response = answered.await?;
            Ok(response.map(|body| Body::new(Counted { body, in_flight })))
        })
    }
}

/// The request line and header block's size, as a client sent it (near
/// enough: the request line's spaces and version are counted as 12).
fn header_bytes<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let target = uri
        .path_and_query()
        .map_or(0, |target| target.as_str().len())
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len());
    let line = request.method().as_str().len() + target + 12;
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight until it
    /// is sent or dropped: a streamed answer is not an idle connection.
    struct Counted {
        #[pin]
        body: Body,
        in_flight: InFlight,
    }
}

impl HttpBody for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns the limit in effect.
pub fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> ServerLimits {
        ServerLimits::new(Duration::from_secs(1), Duration::from_secs(5), 1024, max)
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let limits = limits(2);
        let pool = &limits.connections;
        let first = pool.admit(Duration::from_secs(5)).unwrap();
        let second = pool.admit(Duration::from_secs(5)).unwrap();
        let _busy = second.request_started();
        let third = pool
            .admit(Duration::from_secs(5))
            .expect("the idle first connection makes room");
        assert!(first.displaced.is_cancelled());
        assert!(!second.displaced.is_cancelled());
        let _also_busy = third.request_started();
        drop(first);
        // Both remaining connections are busy: the next one is refused.
        assert!(pool.admit(Duration::from_secs(5)).is_none());
        assert_eq!(pool.open.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn deadlines_follow_activity() {
        let limits = limits(4);
        let connection = limits.connections.admit(limits.idle_timeout).unwrap();
        let (_, why) = connection.idle_deadline(&limits).unwrap();
        assert_eq!(why, "header_timeout");
        let request = connection.request_started();
        assert!(connection.idle_deadline(&limits).is_none());
        assert!(limits.connections.idle.lock().unwrap().is_empty());
        drop(request);
        let (_, why) = connection.idle_deadline(&limits).unwrap();
        assert_eq!(why, "idle");
        assert_eq!(limits.connections.idle.lock().unwrap().len(), 1);
        drop(connection);
        assert!(limits.connections.idle.lock().unwrap().is_empty());
        assert_eq!(limits.connections.open.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_new_connection_displaces_the_longest_silent_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, limits(3), shutdown.clone()));
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut talker = TcpStream::connect(addr).await.unwrap();
        talker
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(2), talker.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut byte = [0u8; 1];
        let first = tokio::time::timeout(Duration::from_secs(2), silent[0].read(&mut byte)).await;
        assert!(
            matches!(first, Ok(Ok(0)) | Ok(Err(_))),
            "the oldest is closed: {first:?}"
        );
        let second =
            tokio::time::timeout(Duration::from_millis(300), silent[1].read(&mut byte)).await;
        assert!(second.is_err(), "the next one stays: {second:?}");
        shutdown.cancel();
        drop(silent);
        server.await.unwrap().unwrap();
    }

    #[test]
    fn the_fd_limit_is_known() {
        assert!(raise_fd_limit() >= 64);
    }
}
