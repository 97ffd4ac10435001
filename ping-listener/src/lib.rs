//! ping-listener: answers `PingRequest` with `PingResponse`, adding
//! `receivedAt`. Everything but the handler is the shared listener runtime
//! in [`common::listener`].

use common::{Event, HandlerError};

pub const SERVICE_NAME: &str = "ping-listener";
pub const DEFAULT_QUEUE: &str = "ping-request";
pub const DEFAULT_PORT: u16 = 3002;

pub async fn handle(request: Event) -> Result<Event, HandlerError> {
    common::ping::answer(&request)
}
