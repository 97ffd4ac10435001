//! `req --watch`: a live subscription over public-web's `/ws`, printing
//! each matching event as it comes.
//!
//! Each event is one line of JSON on stdout, `{"offset", "event"}`, so the
//! output pipes into `jq`; `--from OFFSET` replays from a stream offset
//! first. The filters are the subscription language of the README (a JSON
//! list, all of which must match; a single filter object is taken as a
//! list of one).

use std::io::Write;

use serde_json::{Value, json};

use crate::ws::{Socket, WsError};

/// The subscription's id on the socket.
const SUBSCRIPTION: &str = "watch";

/// Why watching stopped before it was asked to.
#[derive(Debug)]
pub enum WatchError {
    /// The filters are not JSON, or not a list or object.
    Filters(String),
    /// public-web refused the subscription: status, code and message.
    Refused {
        status: u64,
        code: String,
        message: String,
    },
    Socket(WsError),
    Output(std::io::Error),
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Filters(reason) => write!(f, "--watch: {reason}"),
            WatchError::Refused {
                status,
                code,
                message,
            } => write!(f, "subscription refused: {status} {code}: {message}"),
            WatchError::Socket(error) => write!(f, "{error}"),
            WatchError::Output(error) => write!(f, "writing the events: {error}"),
        }
    }
}

impl std::error::Error for WatchError {}

impl From<WsError> for WatchError {
    fn from(error: WsError) -> Self {
        WatchError::Socket(error)
    }
}

/// The filter list `--watch` was given.
pub fn parse_filters(text: &str) -> Result<Value, WatchError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(filters)) => Ok(Value::Array(filters)),
        Ok(filter @ Value::Object(_)) => Ok(Value::Array(vec![filter])),
        Ok(other) => Err(WatchError::Filters(format!(
            "filters are a JSON list or one filter object, not {other}"
        ))),
        Err(error) => Err(WatchError::Filters(format!("not JSON: {error}"))),
    }
}

/// The frame that subscribes to `filters`, from `from` when given.
pub fn subscribe_frame(filters: &Value, from: Option<u64>) -> Value {
    let mut subscribe = json!({"id": SUBSCRIPTION, "filters": filters});
    if let Some(from) = from {
        subscribe["from"] = json!(from);
    }
    json!({ "subscribe": subscribe })
}

/// Subscribes on `socket` and writes each event to `out` until `limit`
/// events (when given) or the socket ends.
pub async fn watch(
    mut socket: Socket,
    filters: &Value,
    from: Option<u64>,
    limit: Option<u64>,
    out: &mut impl Write,
) -> Result<u64, WatchError> {
    socket
        .send(subscribe_frame(filters, from).to_string())
        .await?;
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        let frame = socket.next_json().await?;
        if let Some(error) = frame.get("error") {
            return Err(WatchError::Refused {
                status: frame["status"].as_u64().unwrap_or(0),
                code: error["code"].as_str().unwrap_or_default().to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if frame.get("subscribed").is_some() {
            continue;
        }
        if let (Some(offset), Some(event)) = (frame.get("offset"), frame.get("event")) {
            let line = json!({"offset": offset, "event": event});
            writeln!(out, "{line}").map_err(WatchError::Output)?;
            out.flush().map_err(WatchError::Output)?;
            printed += 1;
        }
    }
    socket.close().await;
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_filter_is_a_list_of_one() {
        let filters = parse_filters(r#"{"exact": {"type": "PingResponse"}}"#).unwrap();
        assert_eq!(filters, json!([{"exact": {"type": "PingResponse"}}]));
        let list = parse_filters(
            r#"[{"prefix": {"type": "Order"}}, {"exact": {"direction": "response"}}]"#,
        )
        .unwrap();
        assert_eq!(list.as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_filters_say_why() {
        assert!(
            parse_filters("{not json")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        assert!(
            parse_filters("42")
                .unwrap_err()
                .to_string()
                .contains("not 42")
        );
    }

    #[test]
    fn the_subscribe_frame_carries_the_offset_when_given() {
        let filters = json!([]);
        assert_eq!(
            subscribe_frame(&filters, None),
            json!({"subscribe": {"id": "watch", "filters": []}})
        );
        assert_eq!(subscribe_frame(&filters, Some(7))["subscribe"]["from"], 7);
    }
}
