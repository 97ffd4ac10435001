//! One request, as `req` without load flags sends it (a `POST`, or with
//! `--ws` a frame on `/ws`), and the words for what came back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Client, StatusCode, Url};
use serde_json::Value;

use crate::ws::{self, Socket, WsError};

/// The header public-web returns the request's trace id in.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// What one request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// From [`TRACE_ID_HEADER`], when the server traced the request.
    pub trace_id: Option<String>,
    pub body: Bytes,
    /// From just before sending to the last byte of the body, client-side.
    pub round_trip: Duration,
}

impl Answer {
    /// The body as pretty JSON, or as text when it is not JSON.
    pub fn pretty_body(&self) -> String {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string()),
            Err(_) => String::from_utf8_lossy(&self.body).into_owned(),
        }
    }

    /// `receivedAt - sentAt` of a ping response: how long after the client
    /// stamped the request the listener saw it (same-host clocks).
    pub fn listener_delay_ms(&self) -> Option<i64> {
        let json: Value = serde_json::from_slice(&self.body).ok()?;
        let data = json.get("data")?;
        let received = data.get("receivedAt")?.as_i64()?;
        let sent = data.get("sentAt")?.as_i64()?;
        Some(received - sent)
    }
}

/// POSTs `body` to `url` (asking for an asynchronous answer when
/// `respond_async`) and reads the whole answer.
pub async fn send(
    client: &Client,
    url: Url,
    body: Bytes,
    respond_async: bool,
) -> Result<Answer, reqwest::Error> {
    let started = Instant::now();
    let response = crate::payload::post_json(client, url, body, respond_async)
        .send()
        .await?;
    let status = response.status();
    let trace_id = response
        .headers()
        .get(TRACE_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await?;
    Ok(Answer {
        status,
        trace_id,
        body,
        round_trip: started.elapsed(),
    })
}

/// Sends `body` as a frame on a new `/ws` socket at `url` and reads its
/// answer. The frame carries a fresh `traceparent`, so the answer's trace
/// id is known although a frame has no response headers.
pub async fn send_ws(url: &Url, body: Bytes, timeout: Duration) -> Result<Answer, WsError> {
    let mut event: Value = serde_json::from_slice(&body)
        .map_err(|error| WsError::Protocol(format!("the event is not JSON: {error}")))?;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    if let Some(fields) = event.as_object_mut() {
        fields.insert(
            "traceparent".to_owned(),
            Value::String(format!("00-{trace_id}-{span_id}-01")),
        );
    }
    let exchange = async {
        let mut socket = Socket::connect(url, None).await?;
        let started = Instant::now();
        let answer = socket.request(Bytes::from(event.to_string())).await?;
        let round_trip = started.elapsed();
        socket.close().await;
        Ok::<_, WsError>((answer, round_trip))
    };
    let (answer, round_trip) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            WsError::Protocol(format!("no answer from {url} in time (see --timeout)"))
        })??;
    Ok(Answer {
        status: StatusCode::from_u16(ws::answer_status(&answer))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        trace_id: Some(trace_id),
        body: Bytes::from(answer.to_string()),
        round_trip,
    })
}

/// One line saying why a request to `url` got no answer, with the fix for
/// the common case (the platform is not running).
pub fn describe_failure(url: &Url, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer from {url} in time (see --timeout)")
    } else if error.is_connect() {
        format!(
            "cannot connect to {url}: is the platform running? Start it with bin/restart.sh \
             (or point PUBLIC_WEB_URL elsewhere)"
        )
    } else {
        format!("request to {url} failed: {}", error_chain(error))
    }
}

/// The error and its sources on one line: reqwest's own message rarely says
/// what actually went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Answer {
        Answer {
            status: StatusCode::OK,
            trace_id: None,
            body: Bytes::from(body.to_owned()),
            round_trip: Duration::ZERO,
        }
    }

    #[test]
    fn listener_delay_is_received_minus_sent() {
        let ping =
            answer(r#"{"id":"x","type":"PingResponse","data":{"sentAt":1000,"receivedAt":1007}}"#);
        assert_eq!(ping.listener_delay_ms(), Some(7));
    }

    #[test]
    fn listener_delay_needs_both_stamps() {
        let prime = answer(r#"{"id":"x","type":"NthPrimeResponse","data":{"prime":7927}}"#);
        assert_eq!(prime.listener_delay_ms(), None);
        assert_eq!(answer("not json").listener_delay_ms(), None);
    }

    #[test]
    fn pretty_body_indents_json_and_passes_text_through() {
        assert_eq!(answer(r#"{"a":1}"#).pretty_body(), "{\n  \"a\": 1\n}");
        assert_eq!(answer("plain").pretty_body(), "plain");
    }
}
