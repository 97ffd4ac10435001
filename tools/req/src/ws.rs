//! public-web's `GET /ws` as `req` uses it: request/reply frames for
//! `--ws` (one or a load run) and a subscription for `--watch`.
//!
//! A frame is the same JSON `POST /` takes and answers; an error comes back
//! as `{"id", "status", "error"}`. `req` keeps at most one request in flight
//! per socket, so the next answer frame is always the answer to the last
//! request sent.

use std::fmt;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a WebSocket exchange failed.
#[derive(Debug)]
pub enum WsError {
    /// The URL is not http(s) or ws(s).
    Url(String),
    /// The TCP connection or the handshake failed.
    Connect(String),
    /// public-web answered the upgrade with an HTTP error.
    Refused { status: u16, body: String },
    /// The server closed the socket, with its close code and reason.
    Closed { code: u16, reason: String },
    /// A frame that is not a JSON text frame, or another transport error.
    Protocol(String),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Url(reason) => write!(f, "not a WebSocket URL: {reason}"),
            WsError::Connect(reason) => write!(f, "cannot connect: {reason}"),
            WsError::Refused { status, body } => write!(f, "upgrade refused: HTTP {status} {body}"),
            WsError::Closed { code, reason } => write!(f, "closed by the server: {code} {reason}"),
            WsError::Protocol(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for WsError {}

/// `GET /ws` of public-web at `base` (`http://host:port[/prefix]`).
pub fn ws_url(base: &Url) -> Result<Url, WsError> {
    let scheme = match base.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(WsError::Url(format!("scheme {other:?} in {base}"))),
    };
    let mut url = base.clone();
    url.set_path(&format!("{}/ws", base.path().trim_end_matches('/')));
    url.set_query(None);
    url.set_scheme(scheme)
        .map_err(|()| WsError::Url(format!("cannot make {base} a {scheme} URL")))?;
    Ok(url)
}

/// An open `/ws` socket.
pub struct Socket {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// Opens `url`, presenting `token` as a bearer token when given.
    pub async fn connect(url: &Url, token: Option<&str>) -> Result<Self, WsError> {
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|error| WsError::Url(error.to_string()))?;
        if let Some(token) = token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| WsError::Url("the token is not a valid header value".to_owned()))?;
            request.headers_mut().insert("authorization", value);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((inner, _)) => {
                if let MaybeTlsStream::Plain(stream) = inner.get_ref() {
                    let _ = stream.set_nodelay(true);
                }
                Ok(Self { inner })
            }
            Err(tungstenite::Error::Http(response)) => Err(WsError::Refused {
                status: response.status().as_u16(),
                body: response
                    .into_body()
                    .map(|body| String::from_utf8_lossy(&body).into_owned())
                    .unwrap_or_default(),
            }),
            Err(error) => Err(WsError::Connect(error.to_string())),
        }
    }

    /// Sends one text frame.
    pub async fn send(&mut self, text: String) -> Result<(), WsError> {
        self.inner
            .send(Message::text(text))
            .await
            .map_err(|error| WsError::Protocol(error.to_string()))
    }

    /// The next JSON frame; pings are answered by the library on the way.
    pub async fn next_json(&mut self) -> Result<Value, WsError> {
        loop {
            let message = match self.inner.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(WsError::Protocol(error.to_string())),
                None => {
                    return Err(WsError::Closed {
                        code: 1006,
                        reason: "the connection ended".to_owned(),
                    });
                }
            };
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).map_err(|error| {
                        WsError::Protocol(format!("a frame that is not JSON ({error}): {text}"))
                    });
                }
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|frame| (u16::from(frame.code), frame.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(WsError::Closed { code, reason });
                }
                Message::Binary(_) => {
                    return Err(WsError::Protocol("an unexpected binary frame".to_owned()));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Sends an event and reads its answer: the response event, or the
    /// error frame (which has a `status`).
    pub async fn request(&mut self, body: Bytes) -> Result<Value, WsError> {
        let text = String::from_utf8(body.into())
            .map_err(|_| WsError::Protocol("the event is not UTF-8".to_owned()))?;
        self.send(text).await?;
        self.next_json().await
    }

    /// Closes the socket normally.
    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
    }
}

/// The HTTP status an answer frame carries: an error frame's `status`,
/// else 200.
pub fn answer_status(frame: &Value) -> u16 {
    match frame.get("error") {
        Some(_) => frame
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|status| u16::try_from(status).ok())
            .unwrap_or(500),
        None => 200,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ws_url_swaps_the_scheme_and_keeps_a_prefix() {
        let url = |base: &str| ws_url(&Url::parse(base).unwrap()).map(|url| url.to_string());
        assert_eq!(
            url("http://127.0.0.1:3000").unwrap(),
            "ws://127.0.0.1:3000/ws"
        );
        assert_eq!(
            url("https://example.test/api/").unwrap(),
            "wss://example.test/api/ws"
        );
        assert!(url("ftp://example.test").is_err());
    }

    #[test]
    fn an_error_frame_carries_its_status() {
        assert_eq!(
            answer_status(&json!({"id": "x", "type": "PingResponse"})),
            200
        );
        let error = json!({"id": "x", "status": 504, "error": {"code": "timeout", "message": "m"}});
        assert_eq!(answer_status(&error), 504);
        assert_eq!(answer_status(&json!({"error": {}})), 500);
    }
}
