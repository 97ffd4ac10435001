//! The wire contract: everything a service puts on the wire or reads from
//! it, in one place. A listener written in another language implements
//! this page and nothing else.
//!
//! # Events
//!
//! Every hop carries one JSON envelope, [`Event`]:
//! `{"id": string, "type": string, "data": object}`. `type` selects the
//! route (the dispatcher's `ROUTES`), `id` pairs a response with its
//! request and `data` is the event type's own. Both names are non-empty and
//! at most [`MAX_NAME_LEN`] bytes (they travel in AMQP short strings).
//! Unknown fields are allowed and passed on: public-web answers the client
//! with the response's bytes as the listener wrote them.
//!
//! A handler that cannot answer replies with an [`ERROR_EVENT_TYPE`] event
//! whose `data` is `{"code": "invalid_input" | "handler_failed",
//! "message": "..."}` ([`HandlerError`]); public-web turns it into a 422 or
//! a 500 for the client.
//!
//! # HTTP
//!
//! - public-web → dispatcher: `POST /` with the event,
//!   [`CALLBACK_URL_HEADER`] (the `/dispatch` URL of the public-web
//!   instance that waits for the answer) and [`CORRELATION_HEADER`], a
//!   server-made, unguessable id of the parked request; signed
//!   ([`signature`]). [`TIME_BUDGET_HEADER`] says how many milliseconds
//!   the client still waits: the dispatcher may wait that long (and no
//!   longer than its `PUBLISH_TIMEOUT_MS`) for a broker that is
//!   reconnecting before it gives up with `503`.
//! - dispatcher → public-web: `POST <callback URL>` with the response
//!   event and the response's correlation id, signed the same way.
//!   public-web answers `204`, or `404` when no one waits for that
//!   correlation id any more.
//! - Every error answer, from any service, has the body [`ErrorBody`]:
//!   `{"error": {"code": "...", "message": "..."}}`.
//! - Every traced answer carries its trace id in [`TRACE_ID_HEADER`].
//!
//! # AMQP (RabbitMQ)
//!
//! Each request queue is durable and dead-letters through the default
//! exchange into `<queue>.dead` ([`dead_letter_queue`]): queue arguments
//! `x-dead-letter-exchange: ""`, `x-dead-letter-routing-key:
//! <queue>.dead`; the dead-letter queue is durable with `x-max-length:`
//! [`DEAD_LETTER_MAX_LENGTH`] and `x-max-length-bytes:`
//! [`DEAD_LETTER_MAX_BYTES`]. Both are classic queues, or both quorum
//! queues (`x-queue-type: quorum`, and on the work queue
//! `x-delivery-limit:` [`DELIVERY_LIMIT`]), as the deployment's
//! `QUEUE_TYPE` says. Declare both with exactly these arguments (RabbitMQ
//! refuses a redeclaration that differs).
//!
//! A consumer dead-letters, unread, any message larger than its
//! `MAX_MESSAGE_BYTES`; a listener whose response would be larger answers
//! with a `handler_failed` error event instead.
//!
//! A request message, published by the dispatcher to the default exchange
//! with the queue as routing key, has the event as its body and the
//! properties `content_type: application/json`, `message_id` (the event
//! id), `type` (the event type), `correlation_id` (the parked request's
//! correlation id), `reply_to` (the response queue), `expiration` (no one
//! waits longer) and the header [`CALLBACK_URL_HEADER`].
//!
//! A listener consumes with manual acks and a bounded prefetch and, for
//! each request:
//! 1. publishes the response event to the default exchange with routing
//!    key `reply_to`, `correlation_id` copied from the request (the
//!    request event's `id` when it has none), `message_id`/`type` of the
//!    response (whose `id` is the request's), and the request's
//!    [`CALLBACK_URL_HEADER`] copied onto it, and waits for the broker's
//!    publisher confirm;
//! 2. then acks the request. A message that is not an event, or has no
//!    `reply_to`, is rejected without requeue (it goes to `<queue>.dead`).
//!
//! A listener's response also carries `app_id`, its service name: the
//! event stream names it as the response's `source`.
//!
//! # The event stream
//!
//! The dispatcher appends every event it routes to one RabbitMQ stream
//! (`EVENT_STREAM`, `x-queue-type: stream`), in the order it routes them:
//! each request once the broker has it in its queue, each response as it
//! arrives. A record's body is the event's JSON as it travelled; its
//! properties are `message_id` and `type` (the event's), and its headers
//! [`STREAM_DIRECTION_HEADER`] (`request` or `response`),
//! [`STREAM_SOURCE_HEADER`] (the service that produced the event:
//! `public-web` for a client's request, the listener's `app_id` for a
//! response) and `x-stream-filter-value` (the type, for brokers that
//! filter streams), and the trace context it was recorded in. Correlation
//! ids and callback URLs are not recorded: the stream is readable by
//! subscribers, those are not theirs. The response to an asynchronous
//! request (one without a callback URL) is acknowledged only once the
//! stream confirmed it: the stream is its only way on. The webhook-sender
//! appends `notice` records (`WebhookDeliveryExhausted`).
//!
//! # Trace context
//!
//! W3C Trace Context (`traceparent`, `tracestate`) and `baggage` travel as
//! HTTP headers and as AMQP message headers (long strings) of the same
//! names. A consumer's span is a child of the context in the message.

mod error;
mod event;
pub mod signature;

pub use error::{ERROR_EVENT_TYPE, ErrorBody, ErrorCode, ErrorDetail, HandlerError};
pub use event::{EnvelopeError, Event, EventInput, MAX_NAME_LEN, ParseError};
pub use signature::{
    CORRELATION_HEADER, Hop, InternalSecret, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

/// The `/dispatch` URL of the public-web instance waiting for an answer:
/// an HTTP header from public-web to the dispatcher, then an AMQP header on
/// the request and on its response. A request without one is
/// asynchronous: its response goes to the event stream only.
pub const CALLBACK_URL_HEADER: &str = "x-callback-url";

/// public-web → dispatcher: the milliseconds left before the client's
/// request times out. Relative, so the two hosts' clocks need not agree.
pub const TIME_BUDGET_HEADER: &str = "x-time-budget-ms";

/// Stream record header: `request`, `response`, or `notice` (what the
/// platform says about deliveries, e.g. `WebhookDeliveryExhausted`).
pub const STREAM_DIRECTION_HEADER: &str = "x-direction";

/// Stream record header: the service that produced the event.
pub const STREAM_SOURCE_HEADER: &str = "x-source";

/// Stream record header some brokers (RabbitMQ 3.13 and later) filter
/// stream reads on: the event's type.
pub const STREAM_FILTER_HEADER: &str = "x-stream-filter-value";

/// The response header that tells the client its request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Dead-letter queues keep at most this many messages (oldest dropped), so
/// a stream of poison messages cannot fill the broker.
pub const DEAD_LETTER_MAX_LENGTH: i64 = 10_000;

/// Nor more than this many bytes of them: ten thousand large messages
/// would otherwise still fill it.
pub const DEAD_LETTER_MAX_BYTES: i64 = 64 * 1024 * 1024;

/// A quorum work queue dead-letters a message after this many deliveries
/// (RabbitMQ 4's own default, made explicit so that every version agrees):
/// a message that crashes its consumer every time cannot loop forever.
pub const DELIVERY_LIMIT: i64 = 20;

/// The dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}
