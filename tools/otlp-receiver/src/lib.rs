//! The export side of an OTLP collector: `TraceService/Export` and
//! `LogsService/Export` over gRPC, `/v1/traces` and `/v1/logs` over
//! HTTP/protobuf, on loopback. The services export to it as to a real
//! collector; what happens to an export is its user's: the tests keep
//! every span and log record, the bench's sink only counts them.
//!
//! An export is decoded as the user's message type: the official
//! `ExportTraceServiceRequest`, or a skeleton that reads only what it
//! needs (prost skips the fields a type does not declare). One router
//! serves both ports: gRPC requests are HTTP/2 POSTs to the method's path,
//! so they route like the HTTP/protobuf ones.

use std::convert::Infallible;
use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use axum::routing::post;
use futures_util::future::BoxFuture;
use prost::Message;
use tokio::net::TcpListener;
use tonic_prost::ProstCodec;

/// What a receiver does with each export, decoded as `Traces` or `Logs`.
pub trait Exports: Clone + Send + Sync + 'static {
    type Traces: Message + Default + Send + 'static;
    type Logs: Message + Default + Send + 'static;

    fn traces(&self, export: Self::Traces);
    fn logs(&self, export: Self::Logs);
}

/// The four export routes, handing each export to `exports`.
pub fn router<E: Exports>(exports: E) -> Router {
    let traces = {
        let exports = exports.clone();
        Arc::new(move |export: E::Traces| exports.traces(export))
    };
    let logs = {
        let exports = exports.clone();
        Arc::new(move |export: E::Logs| exports.logs(export))
    };
    Router::new()
        .route_service(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            GrpcExport(traces.clone()),
        )
        .route_service(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            GrpcExport(logs.clone()),
        )
        .route("/v1/traces", post(move |body| http_export(body, traces)))
        .route("/v1/logs", post(move |body| http_export(body, logs)))
}

/// The receiver's two loopback ports, bound.
pub struct Ports {
    grpc: TcpListener,
    http: TcpListener,
}

impl Ports {
    /// Binds 127.0.0.1 on `grpc` and `http` (0 picks a port).
    pub async fn bind(grpc: u16, http: u16) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(("127.0.0.1", grpc)).await?,
            http: TcpListener::bind(("127.0.0.1", http)).await?,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves `app` on both ports until either fails.
    pub async fn serve(self, app: Router) -> std::io::Result<()> {
        tokio::select! {
            served = axum::serve(self.grpc, app.clone()) => served,
            served = axum::serve(self.http, app) => served,
        }
    }
}

/// What a receiver answers: `ExportTraceServiceResponse` and
/// `ExportLogsServiceResponse` without their optional `partial_success`,
/// which is what full success looks like on the wire (no bytes).
#[derive(Clone, PartialEq, Message)]
struct Accepted {}

type Handle<M> = Arc<dyn Fn(M) + Send + Sync>;

/// The unary gRPC method `Export`, framed and decoded by tonic as a
/// generated server would.
struct GrpcExport<M>(Handle<M>);

impl<M> Clone for GrpcExport<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: Message + Default + Send + 'static> tower::Service<Request<Body>> for GrpcExport<M> {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let handle = self.0.clone();
        let export = tower::service_fn(move |export: tonic::Request<M>| {
            handle(export.into_inner());
            ready(Ok::<_, tonic::Status>(tonic::Response::new(Accepted {})))
        });
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Accepted, M>::default());
            Ok(grpc.unary(export, request).await)
        })
    }
}

async fn http_export<M: Message + Default>(
    body: Bytes,
    handle: Handle<M>,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let export = M::decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    handle(export);
    Ok(Accepted {}.encode_to_vec())
}
