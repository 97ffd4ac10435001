//! bare-h2-server: the floor of hyper's own memory per parked request, over
//! HTTP/2 or HTTP/1.1, the comparison point for public-web's parked RSS.
//!
//! The smallest hyper 1.x server that parks requests the way public-web
//! does: no axum, no tower layers, no pending map, no forward to the
//! dispatcher. `POST /` drops the request and answers with a future that
//! never completes; the future counts itself as parked when first polled
//! and uncounts itself when dropped (the client hung up). `GET /metrics`
//! answers `public_web_pending_requests <n>`, so `parked-rss` runs against
//! it unchanged (`--protocol h2c` or `http1`), and whatever RSS it measures
//! here is what hyper, h2 and tokio spend per parked request before
//! public-web adds anything of its own.
//!
//! HTTP/2 connections (prior knowledge, recognised by the `PRI` of their
//! preface) are served by `hyper::server::conn::http2::Builder` with hyper's
//! default settings (200 concurrent streams, as public-web has); anything
//! else by `http1::Builder`, since parked-rss scrapes `/metrics` over
//! HTTP/1.1. `--auto` serves every connection with hyper-util's
//! `auto::Builder` instead, as `axum::serve` does; `--boxed` boxes the
//! service future, as axum's router does. The runtime and the allocator
//! are public-web's: `#[tokio::main]` (one worker per core) and mimalloc
//! as `common::allocator` tunes it. Prints its bound address on stdout.

use std::convert::Infallible;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;

/// Park every `POST /` forever; report the count on `GET /metrics`.
#[derive(Debug, Parser)]
#[command(name = "bare-h2-server")]
struct Cli {
    /// Port to listen on, on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve every connection with hyper-util's `auto::Builder`, as
    /// `axum::serve` does, instead of hyper's `http2::Builder`.
    #[arg(long)]
    auto: bool,
    /// Box the service future (`Pin<Box<dyn Future + Send>>`), as axum's
    /// router does.
    #[arg(long)]
    boxed: bool,
}

/// Requests whose reply future has been polled and not yet dropped.
static PARKED: AtomicU64 = AtomicU64::new(0);

/// The first bytes of the HTTP/2 client preface.
const H2_PREFACE_START: &[u8] = b"PRI";

/// What the service answers: a response at once, or never.
enum Reply {
    Ready(Option<Response<String>>),
    /// `counted` once it has been polled.
    Parked {
        counted: bool,
    },
}

impl Future for Reply {
    type Output = Result<Response<String>, Infallible>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Reply::Ready(response) => {
                Poll::Ready(Ok(response.take().expect("Reply polled after completion")))
            }
            Reply::Parked { counted } => {
                if !*counted {
                    *counted = true;
                    PARKED.fetch_add(1, Ordering::Relaxed);
                }
                // Never woken: only a hang-up (a drop) ends it.
                Poll::Pending
            }
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Reply::Parked { counted: true } = self {
            PARKED.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The service: the request is dropped here, headers and body unread.
fn reply(request: Request<Incoming>) -> Reply {
    let method = request.method();
    let path = request.uri().path();
    if method == Method::POST && path == "/" {
        return Reply::Parked { counted: false };
    }
    let response = if method == Method::GET && path == "/metrics" {
        let text = format!(
            "# TYPE public_web_pending_requests gauge\npublic_web_pending_requests {}\n",
            PARKED.load(Ordering::Relaxed)
        );
        Response::new(text)
    } else {
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    };
    Reply::Ready(Some(response))
}

type BoxedReply = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

fn boxed_reply(request: Request<Incoming>) -> BoxedReply {
    Box::pin(reply(request))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, cli.port)).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait for hang-ups.
                eprintln!("bare-h2-server: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (auto, boxed) = (cli.auto, cli.boxed);
        tokio::spawn(async move {
            let served = match (auto, boxed) {
                (false, false) => serve(stream, service_fn(reply)).await,
                (false, true) => serve(stream, service_fn(boxed_reply)).await,
                (true, false) => serve_auto(stream, service_fn(reply)).await,
                (true, true) => serve_auto(stream, service_fn(boxed_reply)).await,
            };
            if let Err(error) = served {
                eprintln!("bare-h2-server: connection: {error}");
            }
        });
    }
}

/// One connection, with hyper's `http2::Builder` when it opens with the
/// HTTP/2 preface, else with `http1::Builder`.
async fn serve<S>(
    stream: TcpStream,
    service: S,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: Service<Request<Incoming>, Response = Response<String>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(stream);
    if is_h2(io.inner()).await? {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await?;
    } else {
        hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await?;
    }
    Ok(())
}

/// One connection, the way `axum::serve` serves it.
async fn serve_auto<S>(
    stream: TcpStream,
    service: S,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: Service<Request<Incoming>, Response = Response<String>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
}

/// Whether the connection starts with the HTTP/2 preface; peeks, so the
/// bytes stay for hyper to read.
async fn is_h2(stream: &TcpStream) -> std::io::Result<bool> {
    let mut start = [0; H2_PREFACE_START.len()];
    // A preface split before its third byte is retried a few times.
    for _ in 0..100 {
        let read = stream.peek(&mut start).await?;
        if read == 0 || start[..read] != H2_PREFACE_START[..read] {
            return Ok(false);
        }
        if read == start.len() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(false)
}
