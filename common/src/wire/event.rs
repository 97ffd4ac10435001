//! The event envelope every hop carries: `{"id", "type", "data"}`.
//!
//! `id` is a string, `type` names the event and selects its route, `data`
//! is an object whose shape the event type defines. Clients may leave `id`
//! out; public-web assigns one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An event with an id, ready to be routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// An event as a client may send it: the id is optional.
#[derive(Debug, Clone, Deserialize)]
pub struct EventInput {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// Why an envelope that parsed as JSON is still not a valid event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("event type must not be empty")]
    EmptyType,
    #[error("event id must not be empty")]
    EmptyId,
    #[error("event {field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
}

/// Longest id or type accepted. Both travel in AMQP short strings (255 bytes).
pub const MAX_NAME_LEN: usize = 255;

impl EventInput {
    /// Checks the envelope and gives it an id (a fresh UUID when it had none).
    pub fn into_event(self) -> Result<Event, EnvelopeError> {
        let id = match self.id {
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let event = Event {
            id,
            kind: self.kind,
            data: self.data,
        };
        event.validate()?;
        Ok(event)
    }
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(kind: impl Into<String>, data: Map<String, Value>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            data,
        }
    }

    /// The checks serde cannot express: non-empty names that fit AMQP fields.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.kind.trim().is_empty() {
            return Err(EnvelopeError::EmptyType);
        }
        if self.id.trim().is_empty() {
            return Err(EnvelopeError::EmptyId);
        }
        for (field, value) in [("type", &self.kind), ("id", &self.id)] {
            if value.len() > MAX_NAME_LEN {
                return Err(EnvelopeError::TooLong {
                    field,
                    max: MAX_NAME_LEN,
                });
            }
        }
        Ok(())
    }

    /// The response to this event: same id, the given type, and this event's
    /// data with `extra` merged over it.
    pub fn reply(&self, kind: impl Into<String>, extra: Map<String, Value>) -> Event {
        let mut data = self.data.clone();
        data.extend(extra);
        Event {
            id: self.id.clone(),
            kind: kind.into(),
            data,
        }
    }

    /// Parses and validates an event from raw bytes (an AMQP body).
    pub fn from_slice(bytes: &[u8]) -> Result<Event, ParseError> {
        let event: Event = serde_json::from_slice(bytes)?;
        event.validate()?;
        Ok(event)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Event always serialises")
    }
}

/// Bytes that are not an event.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not an event: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_id_gets_a_uuid() {
        let input: EventInput = serde_json::from_value(json!({"type": "PingRequest"})).unwrap();
        let event = input.into_event().unwrap();
        assert_eq!(
            uuid::Uuid::parse_str(&event.id).unwrap().get_version_num(),
            4
        );
        assert!(event.data.is_empty());
    }

    #[test]
    fn empty_type_is_refused() {
        let input: EventInput = serde_json::from_value(json!({"type": " ", "data": {}})).unwrap();
        assert_eq!(input.into_event().unwrap_err(), EnvelopeError::EmptyType);
    }

    #[test]
    fn data_must_be_an_object() {
        assert!(serde_json::from_value::<EventInput>(json!({"type": "T", "data": [1]})).is_err());
    }

    #[test]
    fn overlong_id_is_refused() {
        let event = Event {
            id: "x".repeat(256),
            kind: "T".into(),
            data: Map::new(),
        };
        assert!(matches!(
            event.validate(),
            Err(EnvelopeError::TooLong { field: "id", .. })
        ));
    }

    #[test]
    fn numbers_survive_a_round_trip() {
        // Found by the envelope fuzzer: without serde_json's float_roundtrip
        // an integer too large for u64 came back as a different float.
        let bytes = br#"{"id":"1","type":"T","data":{"n":51111111111111111111111111111111111111110,"x":0.1}}"#;
        let event = Event::from_slice(bytes).unwrap();
        assert_eq!(Event::from_slice(&event.to_vec()).unwrap(), event);
    }

    #[test]
    fn reply_keeps_id_and_data() {
        let request = Event {
            id: "1".into(),
            kind: "PingRequest".into(),
            data: json!({"sentAt": 5}).as_object().unwrap().clone(),
        };
        let extra = json!({"receivedAt": 7}).as_object().unwrap().clone();
        let response = request.reply("PingResponse", extra);
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"id": "1", "type": "PingResponse", "data": {"sentAt": 5, "receivedAt": 7}})
        );
    }
}
