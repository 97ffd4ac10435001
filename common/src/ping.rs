//! The ping exchange, answered both by ping-listener (through the broker)
//! and by public-web's local `POST /ping`.

use serde_json::{Map, Value};

use crate::event::{Event, HandlerError, now_millis};

pub const PING_REQUEST: &str = "PingRequest";
pub const PING_RESPONSE: &str = "PingResponse";

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
