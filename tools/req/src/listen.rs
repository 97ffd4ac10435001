//! `req --webhook-listen PORT`: a webhook receiver for people and scripts.
//!
//! It serves `POST` on every path of `127.0.0.1:PORT`, checks each
//! delivery's Standard Webhooks signature with the secret given
//! (`--secret`, or `$WEBHOOK_SECRET`), answers `204` to a valid one and
//! `401` to one that does not verify, and prints one JSON line per delivery
//! on stdout: `{"webhook_id", "verified", "error"?, "event"}`. Without a
//! secret it accepts and prints everything, marked unverified.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::webhook::{ID_HEADER, Verifier};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Binds `127.0.0.1:port` and serves until `shutdown` resolves.
pub async fn serve(
    port: u16,
    verifier: Option<Verifier>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .fallback(receive)
        .with_state(Arc::new(verifier));
    eprintln!("req: receiving webhooks on http://{addr}/ (Ctrl-C to stop)");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(addr)
}

async fn receive(
    State(verifier): State<Arc<Option<Verifier>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (line, status) = describe(verifier.as_ref().as_ref(), &headers, &body);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    status
}

/// The line printed for a delivery, and the status answered.
fn describe(verifier: Option<&Verifier>, headers: &HeaderMap, body: &[u8]) -> (Value, StatusCode) {
    let webhook_id = headers
        .get(ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let event = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    match verifier.map(|verifier| verifier.verify(headers, body)) {
        Some(Ok(())) => (
            json!({"webhook_id": webhook_id, "verified": true, "event": event}),
            StatusCode::NO_CONTENT,
        ),
        Some(Err(error)) => (
            json!({"webhook_id": webhook_id, "verified": false, "error": error.to_string(), "event": event}),
            StatusCode::UNAUTHORIZED,
        ),
        None => (
            json!({"webhook_id": webhook_id, "verified": false, "error": "no secret given", "event": event}),
            StatusCode::NO_CONTENT,
        ),
    }
}

#[cfg(test)]
mod tests {
    use common::webhook::{SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER, now_seconds};

    use super::*;

    fn signed(secret: &Secret, body: &[u8]) -> HeaderMap {
        let now = now_seconds();
        let mut headers = HeaderMap::new();
        headers.insert(ID_HEADER, "msg_1".parse().unwrap());
        headers.insert(TIMESTAMP_HEADER, now.to_string().parse().unwrap());
        headers.insert(
            SIGNATURE_HEADER,
            secret.sign("msg_1", now, body).parse().unwrap(),
        );
        headers
    }

    #[test]
    fn a_valid_delivery_is_accepted_and_printed() {
        let secret = Secret::generate();
        let verifier = Verifier::new(vec![secret.clone()]);
        let body = br#"{"id":"a","type":"PingResponse","data":{}}"#;
        let (line, status) = describe(Some(&verifier), &signed(&secret, body), body);
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(line["verified"], true);
        assert_eq!(line["webhook_id"], "msg_1");
        assert_eq!(line["event"]["type"], "PingResponse");
    }

    #[test]
    fn a_forged_delivery_is_refused_and_says_why() {
        let verifier = Verifier::new(vec![Secret::generate()]);
        let body = b"{}";
        let (line, status) = describe(Some(&verifier), &signed(&Secret::generate(), body), body);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(line["verified"], false);
        assert_eq!(line["error"], "no signature matches");
        let (line, status) = describe(None, &HeaderMap::new(), b"plain");
        assert_eq!(
            (status, &line["event"]),
            (StatusCode::NO_CONTENT, &json!("plain"))
        );
    }
}
