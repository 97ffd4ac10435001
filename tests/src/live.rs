//! Clients of public-web's live endpoints for the tests: a WebSocket
//! (tokio-tungstenite, a third-party client), an SSE reader over reqwest,
//! subscriber tokens minted with jsonwebtoken, and a direct reader of the
//! event stream over AMQP.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame or event.
pub const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket to public-web's `/ws`.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects to `base` (`http://host:port`) with `token`, if any, as a
    /// bearer header.
    pub async fn connect(base: &str, token: Option<&str>) -> Self {
        Self::try_connect(base, token)
            .await
            .expect("the WebSocket upgrade succeeds")
    }

    /// The upgrade's outcome: the socket, or the HTTP status and body of
    /// the refusal.
    pub async fn try_connect(base: &str, token: Option<&str>) -> Result<Self, (u16, String)> {
        let url = format!("{}/ws", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().expect("a ws URL");
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("a header value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .map(|body| String::from_utf8_lossy(&body).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(error) => panic!("connecting the WebSocket: {error}"),
        }
    }

    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text))
            .await
            .expect("the frame is sent");
    }

    pub async fn send_message(&mut self, message: Message) {
        self.socket.send(message).await.expect("the frame is sent");
    }

    /// The next text frame as JSON (pings and pongs skipped); panics on a
    /// close or after [`WAIT`].
    pub async fn next_json(&mut self) -> Value {
        self.next_json_within(WAIT).await
    }

    /// The next text frame as JSON, waiting up to `wait`.
    pub async fn next_json_within(&mut self, wait: Duration) -> Value {
        match self.next_message_within(wait).await {
            Some(Message::Text(text)) => serde_json::from_str(&text).expect("a JSON frame"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame that is not a ping or pong; `None` when the socket
    /// ended.
    pub async fn next_message(&mut self) -> Option<Message> {
        self.next_message_within(WAIT).await
    }

    async fn next_message_within(&mut self, wait: Duration) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(wait, self.socket.next())
                .await
                .expect("a frame in time");
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Subscribes as `id` to `filters` (from `from`) and returns the
    /// server's acknowledgement frame.
    pub async fn subscribe(&mut self, id: &str, filters: Value, from: Option<u64>) -> Value {
        let mut subscribe = serde_json::json!({"id": id, "filters": filters});
        if let Some(from) = from {
            subscribe["from"] = from.into();
        }
        self.send_json(&serde_json::json!({ "subscribe": subscribe }))
            .await;
        self.next_json().await
    }
}

/// An SSE stream from `/events`.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: u64,
    pub data: Value,
}

impl SseClient {
    /// `GET {base}/events?{query}` with `Last-Event-ID` and a bearer token
    /// when given: the stream, or the refusal's status and JSON body.
    pub async fn connect(
        base: &str,
        query: &str,
        last_event_id: Option<u64>,
        token: Option<&str>,
    ) -> Result<Self, (u16, Value)> {
        let client = reqwest::Client::new();
        let mut request = client
            .get(format!("{base}/events?{query}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("public-web answers");
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.json().await.expect("a JSON error");
            return Err((status, body));
        }
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Ok(Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        })
    }

    /// The next event (keep-alive comments skipped); `None` when the
    /// stream ended. Panics after [`WAIT`].
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = value.parse().ok();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(value).ok();
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return Some(SseEvent { id, data });
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event in time");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// A subscriber token signed HS256 with `key`, holding `claims` (add
/// `exp` yourself).
pub fn hs256_token(key: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("a token")
}

/// Unix seconds `delta` from now.
pub fn unix_in(delta: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + delta
}

/// A record of the stream as its AMQP reader sees it.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub offset: u64,
    pub event: Value,
    pub headers: Vec<(String, String)>,
}

impl StreamRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads `count` records of `stream` from its first, directly over AMQP.
pub async fn read_stream(stream: &str, count: usize) -> Vec<StreamRecord> {
    let connection = crate::connect().await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut deliveries = channel
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            common::amqp::stream::StartAt::Offset(0).consume_arguments(),
        )
        .await
        .expect("the stream exists");
    let mut records = Vec::new();
    while records.len() < count {
        let delivery = tokio::time::timeout(WAIT, deliveries.next())
            .await
            .expect("a record in time")
            .expect("the consumer is open")
            .expect("a delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        let headers = delivery
            .properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .map(|(key, value)| {
                        let text = match value {
                            lapin::types::AMQPValue::LongString(text) => {
                                String::from_utf8_lossy(text.as_bytes()).into_owned()
                            }
                            other => format!("{other:?}"),
                        };
                        (key.to_string(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let record = common::amqp::stream::Record::from_delivery(delivery)
            .expect("a stream record has an offset");
        records.push(StreamRecord {
            offset: record.offset,
            event: serde_json::from_slice(&record.body).expect("a JSON event"),
            headers,
        });
    }
    common::amqp::connection::close(&connection).await;
    records
}

/// Runs `tests/python/<script>` with `args` in that folder's virtual
/// environment (made by `bin/lib/pyvenv` when missing; the first run
/// installs its requirements from PyPI) and returns the JSON object it
/// printed last on stdout. Panics with its stderr when it fails.
pub async fn run_python_check(script: &str, args: &[&str]) -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = tokio::process::Command::new(root.join("bin/lib/pyvenv"))
        .arg(root.join("tests/python"))
        .arg(script)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 300 s"))
        .expect("bin/lib/pyvenv runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("{script} printed no JSON ({error}): {stdout}\n{stderr}"))
}
