//! ping-listener: answers `PingRequest` with `PingResponse`, adding
//! `receivedAt`. Everything but the handler is the shared listener runtime
//! in [`common::listener`]; public-web answers its local `POST /ping` with
//! the same [`answer`].

use common::{Event, HandlerError};
use serde_json::{Map, Value};

pub const SERVICE_NAME: &str = "ping-listener";
pub const DEFAULT_QUEUE: &str = "ping-request";
pub const DEFAULT_PORT: u16 = 3002;
pub const PING_REQUEST: &str = "PingRequest";
pub const PING_RESPONSE: &str = "PingResponse";

/// The listener's handler.
pub async fn handle(request: Event) -> Result<Event, HandlerError> {
    answer(&request)
}

/// `PingRequest` → `PingResponse`: the request's data plus `receivedAt`
/// (ms since the epoch).
pub fn answer(request: &Event) -> Result<Event, HandlerError> {
    if request.kind != PING_REQUEST {
        return Err(HandlerError::invalid_input(format!(
            "expected a {PING_REQUEST}, got {}",
            request.kind
        )));
    }
    let mut received = Map::new();
    received.insert("receivedAt".into(), Value::from(now_millis()));
    Ok(request.reply(PING_RESPONSE, received))
}

/// Milliseconds since the Unix epoch, the unit of `sentAt` and `receivedAt`.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, data: Value) -> Event {
        Event {
            id: "1".into(),
            kind: kind.into(),
            data: data.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn a_ping_is_answered_with_its_data_and_the_time() {
        let before = now_millis();
        let response = answer(&event(PING_REQUEST, json!({"sentAt": 5}))).unwrap();
        assert_eq!(response.id, "1");
        assert_eq!(response.kind, PING_RESPONSE);
        assert_eq!(response.data["sentAt"], 5);
        assert!(response.data["receivedAt"].as_u64().unwrap() >= before);
    }

    #[test]
    fn anything_else_is_invalid_input() {
        let error = answer(&event("Other", json!({}))).unwrap_err();
        assert_eq!(
            error,
            HandlerError::invalid_input("expected a PingRequest, got Other")
        );
    }
}
