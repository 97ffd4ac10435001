//! What goes back when something fails: a handler's `Error` event, and
//! the JSON error body every HTTP answer that is not a success carries.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event::Event;

/// The type of the response event a listener sends when its handler fails.
pub const ERROR_EVENT_TYPE: &str = "Error";

/// Why a handler could not answer, carried back to the client in an
/// [`ERROR_EVENT_TYPE`] event as `{"code", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    pub code: ErrorCode,
    pub message: String,
}

/// The classes of handler failure; public-web maps each to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request's data is not acceptable to the handler (HTTP 422).
    InvalidInput,
    /// The handler failed while working on a valid request (HTTP 500).
    HandlerFailed,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::HandlerFailed => "handler_failed",
        })
    }
}

impl HandlerError {
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidInput,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::HandlerFailed,
            message: message.into(),
        }
    }

    /// The `Error` response event answering request `id`.
    pub fn into_event(self, id: String) -> Event {
        let data = match serde_json::to_value(self) {
            Ok(Value::Object(data)) => data,
            _ => Map::new(),
        };
        Event {
            id,
            kind: ERROR_EVENT_TYPE.to_owned(),
            data,
        }
    }

    /// Reads the error back out of an `Error` event's data.
    pub fn from_event(event: &Event) -> Option<HandlerError> {
        if event.kind != ERROR_EVENT_TYPE {
            return None;
        }
        serde_json::from_value(Value::Object(event.data.clone())).ok()
    }
}

/// The body of every error answered over HTTP:
/// `{"error": {"code": "...", "message": "..."}}`. `code` is a stable,
/// machine-readable name (README's error table); `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handler_error_round_trips_through_an_error_event() {
        let error = HandlerError::invalid_input("n must be at least 1");
        let event = error.clone().into_event("7".into());
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"id": "7", "type": "Error", "data": {"code": "invalid_input", "message": "n must be at least 1"}})
        );
        assert_eq!(HandlerError::from_event(&event), Some(error));
    }

    #[test]
    fn the_error_body_has_one_shape() {
        assert_eq!(
            serde_json::to_value(ErrorBody::new("timeout", "no response")).unwrap(),
            json!({"error": {"code": "timeout", "message": "no response"}})
        );
    }
}
