//! The bodies `req` sends.
//!
//! Events carry no `id`: public-web assigns one, so concurrent requests of a
//! load run can never collide on a duplicate id.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

/// The event type `req` sends when told nothing else.
pub const PING_REQUEST: &str = "PingRequest";

/// What each request carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A `PingRequest` whose `sentAt` is stamped as each request leaves.
    Ping,
    /// The same event for every request, serialized once.
    Fixed(Bytes),
}

impl Payload {
    /// An event of type `kind` with `data`.
    pub fn event(kind: &str, data: &Value) -> Self {
        let body = json!({"type": kind, "data": data});
        Payload::Fixed(Bytes::from(body.to_string()))
    }

    /// The JSON body for the next request.
    pub fn body(&self) -> Bytes {
        match self {
            Payload::Ping => {
                let body = json!({"type": PING_REQUEST, "data": {"sentAt": now_millis()}});
                Bytes::from(body.to_string())
            }
            Payload::Fixed(body) => body.clone(),
        }
    }
}

/// Milliseconds since the Unix epoch, the unit of `sentAt`/`receivedAt`.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The request every HTTP mode sends: a JSON body POSTed to `url`, with
/// `Prefer: respond-async` when the answer is to go to the event stream.
pub(crate) fn post_json(
    client: &reqwest::Client,
    url: reqwest::Url,
    body: bytes::Bytes,
    respond_async: bool,
) -> reqwest::RequestBuilder {
    let request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if respond_async {
        request.header("prefer", "respond-async")
    } else {
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Bytes) -> Value {
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn ping_is_stamped_when_built() {
        let before = now_millis();
        let body = parse(Payload::Ping.body());
        let after = now_millis();
        assert_eq!(body["type"], PING_REQUEST);
        let sent_at = body["data"]["sentAt"].as_u64().unwrap();
        assert!((before..=after).contains(&sent_at));
        assert!(body.get("id").is_none(), "the server assigns ids");
    }

    #[test]
    fn fixed_event_has_type_and_data_and_no_id() {
        let payload = Payload::event("NthPrimeRequest", &json!({"n": 1001}));
        let body = parse(payload.body());
        assert_eq!(
            body,
            json!({"type": "NthPrimeRequest", "data": {"n": 1001}})
        );
    }
}
