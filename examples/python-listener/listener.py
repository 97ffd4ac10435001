"""python-listener: answers ``EchoRequest`` with ``EchoResponse`` over RabbitMQ.

What
----
A listener of this platform (public-web -> dispatcher -> RabbitMQ ->
listeners) written in Python, with pika and the OpenTelemetry Python SDK.
It consumes its request queue and answers every ``EchoRequest`` event with an
``EchoResponse`` event whose ``data`` is the request's ``data``.

Why
---
It shows that the AMQP wire contract (``common/src/wire/mod.rs``) is
language-neutral: this file implements that contract and nothing else, reads
no Rust, and its CONSUMER and PRODUCER spans join the trace the Rust services
started, because the W3C trace context travels in the AMQP message headers.

The contract, as implemented here
---------------------------------
* Topology: the request queue is durable and dead-letters through the default
  exchange into ``<queue>.dead`` (``x-dead-letter-exchange: ""``,
  ``x-dead-letter-routing-key: <queue>.dead``); the dead-letter queue is
  durable with ``x-max-length: 10000`` and ``x-max-length-bytes: 67108864``,
  both 64-bit signed integers on the wire, as the Rust services declare them
  (RabbitMQ refuses a redeclaration with other arguments).
* Consuming: manual acks, prefetch ``PREFETCH``.
* A request's body is an event ``{"id": str, "type": str, "data": object}``
  (``id``/``type`` non-empty, at most 255 bytes; ``data`` defaults to ``{}``).
  * A body that is not JSON, or is larger than ``MAX_MESSAGE_BYTES``, or a
    request without ``reply_to``, is rejected without requeue: RabbitMQ moves
    it to ``<queue>.dead``.
  * JSON that is not a valid event, or an event of another type, is answered
    with an ``Error`` event ``{"id", "type": "Error", "data": {"code":
    "invalid_input", "message"}}`` when it has a usable ``id`` and a
    ``reply_to`` (else it is dead-lettered too: there is no id to pair an
    answer with). The Rust listener runtime dead-letters every body that is
    not an event; answering tells a publisher that speaks AMQP directly what
    was wrong (public-web never sends such a body).
* Replying: the response goes to the default exchange with routing key
  ``reply_to`` (mandatory), properties ``content_type: application/json``,
  ``message_id``/``type`` of the response, ``correlation_id`` copied from the
  request (the request event's id when it has none), ``app_id`` the
  listener's service name (the event stream's ``source``), the request's
  ``x-callback-url`` header copied, and ``traceparent``/``tracestate`` of the
  PRODUCER span. Publisher confirms are on; the request is acked only once the
  broker has confirmed the response. A failed reply is requeued once, then
  dead-lettered (as the Rust listeners do).
* Tracing: the CONSUMER span ``<queue> process`` is a child of the context in
  the request's headers; the PRODUCER span ``<reply_to> publish`` is its child
  and its context is what the response carries.

Configuration (environment)
---------------------------
``AMQP_URL`` (``amqp://guest:guest@127.0.0.1:5672/%2f``), ``QUEUE``
(``echo-request``), ``PREFETCH`` (16), ``PORT`` (3005: ``/healthz``,
``/readyz``), ``MAX_MESSAGE_BYTES`` (1 MiB, as the Rust services),
``LOG_LEVEL`` (``INFO``). Telemetry: the standard ``OTEL_*`` variables, read by
the SDK (``OTEL_SERVICE_NAME`` defaults to ``python-listener``); spans are
exported over OTLP HTTP/protobuf only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set.

SIGTERM or SIGINT: stop consuming, finish the message in hand, close the
connection, flush the spans, exit 0.

Handling is sequential on pika's BlockingConnection: simple and plenty for an
echo; ``PREFETCH`` bounds the deliveries buffered unacked.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pika
import pika.exceptions
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from pika.compat import long as amqp_long_long  # an int pika encodes as 'l'

# --- The wire contract's constants (common/src/wire) -------------------------

SERVICE_NAME = "python-listener"
REQUEST_TYPE = "EchoRequest"
RESPONSE_TYPE = "EchoResponse"
ERROR_EVENT_TYPE = "Error"
CALLBACK_URL_HEADER = "x-callback-url"
# Ids and types travel in AMQP short strings.
MAX_NAME_LEN = 255
DEAD_LETTER_MAX_LENGTH = 10_000
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024

log = logging.getLogger("python_listener")


# --- Configuration -----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    amqp_url: str
    queue: str
    prefetch: int
    port: int
    max_message_bytes: int

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            amqp_url=os.environ.get("AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/%2f",
            queue=os.environ.get("QUEUE") or "echo-request",
            prefetch=env_int("PREFETCH", 16, 1, 65535),
            port=env_int("PORT", 3005, 0, 65535),
            max_message_bytes=env_int("MAX_MESSAGE_BYTES", 1024 * 1024, 1, 2**31),
        )


def env_int(name: str, default: int, low: int, high: int) -> int:
    """An integer setting, or exit naming the variable that is wrong."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        sys.exit(f"error: {name}={raw!r} is not a whole number in {low}..={high}")
    return value


def describe(error: BaseException) -> str:
    """An error for a log line; pika's connection errors have an empty
    ``str`` and keep their cause in ``repr``."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else repr(error)


def redacted(url: str) -> str:
    """The AMQP URL without its password, for logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


# --- Logging -----------------------------------------------------------------


class LineFormatter(logging.Formatter):
    """``<UTC time>  LEVEL python_listener: message``, like the Rust services."""

    LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        level = self.LEVELS.get(record.levelname, record.levelname)
        message = record.getMessage()
        line = f"{stamp:%Y-%m-%dT%H:%M:%S.%f}Z {level:>5} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    # pika narrates every connection step (a failed connect in a dozen
    # lines, with a traceback) and logs a prefix of a returned reply's body;
    # this listener logs one line for each of those itself.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


# A string logged bare: no space, quote, control character or non-ASCII.
_BARE = re.compile(r"[A-Za-z0-9_.:/-]+")


def fields(**values: Any) -> str:
    """``key=value`` pairs (``None`` left out). A string that is not a plain
    token is JSON-quoted, so a logged value (client input) can neither start
    a new line nor carry terminal escapes."""
    return " ".join(
        f"{key}={_field_value(value)}" for key, value in values.items() if value is not None
    )


def _field_value(value: Any) -> str:
    if isinstance(value, str) and not _BARE.fullmatch(value):
        return json.dumps(value)
    return str(value)


# --- Telemetry ---------------------------------------------------------------


def setup_tracing() -> TracerProvider:
    """A tracer provider named by ``OTEL_SERVICE_NAME`` (default
    ``python-listener``), exporting in batches over OTLP HTTP/protobuf when an
    endpoint is configured. Sampling (``OTEL_TRACES_SAMPLER``) and
    ``OTEL_SDK_DISABLED`` are read by the SDK itself."""
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    if export_wanted():
        # Imported only when used: it pulls in requests and protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        if protocol != "http/protobuf":
            log.warning(
                "only OTLP http/protobuf is supported here; exporting with it anyway %s",
                fields(requested=protocol),
            )
        # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS,
        # _TIMEOUT...; the processor reads OTEL_BSP_*.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting spans over OTLP http/protobuf")
    trace.set_tracer_provider(provider)
    return provider


def export_wanted() -> bool:
    """As the Rust services decide: an OTLP endpoint is set, and neither
    ``OTEL_TRACES_EXPORTER=none`` nor ``OTEL_SDK_DISABLED=true``."""
    env = os.environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    return bool(endpoint) and not disabled and exporter != "none"


class AmqpHeaderGetter(Getter):
    """Reads propagation fields out of pika's header dict. The Rust services
    send them as AMQP long strings, which pika decodes to ``str`` (or leaves
    as ``bytes`` when they are not UTF-8); other types are ignored."""

    def get(self, carrier: dict | None, key: str) -> list | None:
        value = text_header(carrier, key)
        return None if value is None else [value]

    def keys(self, carrier: dict | None) -> list:
        return list(carrier or {})


def text_header(headers: dict | None, name: str) -> str | None:
    """A string header, if present and textual."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def extract_context(headers: dict | None) -> Context:
    """The publisher's context from the message headers; an empty context,
    never the current one, when they carry none."""
    return propagate.extract(headers or {}, context=Context(), getter=AmqpHeaderGetter())


def messaging_attributes(
    operation: tuple, destination: str, message_id: str | None, body_size: int
) -> dict:
    """The messaging semantic-convention attributes the Rust spans carry;
    ``operation`` is (``messaging.operation.type``, ``.name``)."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation[0],
        "messaging.operation.name": operation[1],
        "messaging.destination.name": destination,
        "messaging.message.id": message_id or "",
        "messaging.message.body.size": body_size,
    }


# --- Events ------------------------------------------------------------------


class NotAnEvent(Exception):
    """A body that is not an event. ``event_id`` is its id when that id is
    usable for an answer (then the sender gets an ``Error`` event), else
    ``None`` (then the message is dead-lettered)."""

    def __init__(self, message: str, event_id: str | None = None):
        super().__init__(message)
        self.event_id = event_id


class HandlerError(Exception):
    """A handler's refusal: answered as an ``Error`` event with ``code``
    ``invalid_input`` (HTTP 422 for the client) or ``handler_failed`` (500)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text}")
    return value


def _no_constant(text: str) -> None:
    raise ValueError(f"{text} is not JSON")


# A \uD800-\uDFFF escape: the only way JSON text gets a lone surrogate in.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def parse_json(body: bytes) -> Any:
    """Strict JSON, as serde_json reads it: UTF-8, no NaN/Infinity, no number
    out of float range, no lone surrogate, bounded nesting. Raises
    ``NotAnEvent`` with no id."""
    try:
        text = body.decode("utf-8")
        document = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
        if _SURROGATE_ESCAPE.search(text):
            # Raises UnicodeEncodeError for an unpaired surrogate.
            json.dumps(document, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError) as error:
        raise NotAnEvent(f"not JSON: {error}") from None
    if nesting_depth(document) > MAX_NESTING:
        raise NotAnEvent(f"not JSON: nested deeper than {MAX_NESTING} levels")
    return document


# serde_json refuses a 128th level of arrays and objects: deeper documents are
# not events to the Rust services (and would strain Python's own recursion
# limit when re-encoded).
MAX_NESTING = 127


def nesting_depth(document: Any) -> int:
    """How deeply arrays and objects nest in ``document`` (0 for a scalar)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def usable_name(value: Any) -> bool:
    """A non-blank string of at most MAX_NAME_LEN bytes."""
    return (
        isinstance(value, str)
        and value.strip() != ""
        and len(value.encode("utf-8")) <= MAX_NAME_LEN
    )


def name_problem(field: str, value: Any) -> str | None:
    if value is None:
        return f"event {field} is missing"
    if not isinstance(value, str):
        return f"event {field} must be a string"
    if value.strip() == "":
        return f"event {field} must not be empty"
    if len(value.encode("utf-8")) > MAX_NAME_LEN:
        return f"event {field} is longer than {MAX_NAME_LEN} bytes"
    return None


def parse_event(body: bytes) -> dict:
    """The event in ``body``: ``{"id", "type", "data"}``, or ``NotAnEvent``."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise NotAnEvent("an event is a JSON object")
    event_id = document.get("id")
    usable_id = event_id if usable_name(event_id) else None
    data = document.get("data", {})
    problem = (
        name_problem("id", event_id)
        or name_problem("type", document.get("type"))
        or (None if isinstance(data, dict) else "event data must be an object")
    )
    if problem:
        raise NotAnEvent(problem, usable_id)
    return {"id": event_id, "type": document["type"], "data": data}


def echo(request: dict) -> dict:
    """The handler: ``EchoRequest`` -> ``EchoResponse`` with the same id and
    data; any other type is invalid input."""
    if request["type"] != REQUEST_TYPE:
        raise HandlerError("invalid_input", f"expected a {REQUEST_TYPE}, got {request['type']}")
    return {"id": request["id"], "type": RESPONSE_TYPE, "data": request["data"]}


def error_event(event_id: str, code: str, message: str) -> dict:
    return {
        "id": event_id,
        "type": ERROR_EVENT_TYPE,
        "data": {"code": code, "message": message},
    }


def encode_event(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- AMQP --------------------------------------------------------------------


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def declare_queue(channel, queue: str) -> None:
    """Declares ``queue`` and its dead-letter queue with exactly the Rust
    services' arguments (common/src/amqp/topology.rs). pika would encode
    these small ints as 32-bit 'I'; ``amqp_long_long`` makes them 64-bit 'l'
    (LongLongInt), as lapin sends them. Strings go as long strings 'S'."""
    dead = dead_letter_queue(queue)
    channel.queue_declare(
        queue=dead,
        durable=True,
        arguments={
            "x-max-length": amqp_long_long(DEAD_LETTER_MAX_LENGTH),
            "x-max-length-bytes": amqp_long_long(DEAD_LETTER_MAX_BYTES),
        },
    )
    channel.queue_declare(
        queue=queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        },
    )


def reply_properties(response: dict, request_id: str, request) -> pika.BasicProperties:
    """The reply's properties: the response's id and type, the request's
    correlation id (its event id when it carries none), its callback URL
    carried on, and the current (PRODUCER) span's trace context."""
    headers = {}
    callback = text_header(request.headers, CALLBACK_URL_HEADER)
    if callback is not None:
        headers[CALLBACK_URL_HEADER] = callback
    propagate.inject(headers)  # traceparent, tracestate (and baggage)
    return pika.BasicProperties(
        content_type="application/json",
        message_id=response["id"],
        type=response["type"],
        correlation_id=request.correlation_id or request_id,
        app_id=SERVICE_NAME,
        headers=headers,
    )


class ReplyFailed(Exception):
    """The broker did not take the reply (nacked or unroutable)."""


# --- The listener ------------------------------------------------------------


class Listener:
    """Consumes ``config.queue`` and answers each request (see the module
    docstring); reconnects with backoff until ``stop()``."""

    def __init__(self, config: Config):
        self.config = config
        self.tracer = trace.get_tracer(SERVICE_NAME)
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.consumer_cancelled = False
        self.publisher = None

    def stop(self) -> None:
        self.stopping.set()

    # Sessions: one connection each, until stop or failure.

    def run(self) -> None:
        """Runs sessions until ``stop()``, waiting 100 ms growing to 4 s
        (jittered) after a failed one, as the Rust services do."""
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                self.session()
                return
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code == 406 and "inequivalent" in error.reply_text:
                    log.error(
                        "a queue exists with other arguments; if an older version "
                        "declared it, delete it once drained %s",
                        fields(queue=self.config.queue, error=str(error)),
                    )
                else:
                    log.warning("channel closed by the broker %s", fields(error=str(error)))
            except (pika.exceptions.AMQPError, OSError) as error:
                log.warning("broker session ended %s", fields(error=describe(error)))
            finally:
                self.ready.clear()
            self.stopping.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 4.0)

    def session(self) -> None:
        """Connects, declares, consumes until ``stop()`` (then returns) or a
        failure (then raises)."""
        parameters = pika.URLParameters(self.config.amqp_url)
        parameters.client_properties = {"connection_name": SERVICE_NAME}
        connection = pika.BlockingConnection(parameters)
        try:
            log.info("connected to RabbitMQ %s", fields(broker=redacted(self.config.amqp_url)))
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self.config.prefetch)
            declare_queue(channel, self.config.queue)
            # Replies go on a channel of their own in confirm mode.
            self.publisher = connection.channel()
            self.publisher.confirm_delivery()
            self.consumer_cancelled = False
            channel.add_on_cancel_callback(self.on_cancelled)
            tag = channel.basic_consume(self.config.queue, self.on_message, auto_ack=False)
            self.ready.set()
            log.info("consuming %s", fields(queue=self.config.queue))
            # Deliveries are handled inside process_data_events, one at a
            # time; the loop wakes at least every 250 ms to see stop().
            while not self.stopping.is_set():
                connection.process_data_events(time_limit=0.25)
                if self.consumer_cancelled:
                    raise pika.exceptions.AMQPError("the broker cancelled the consumer")
            self.ready.clear()
            # No more deliveries; those prefetched but not handled go back
            # to the queue (pika rejects them with requeue).
            channel.basic_cancel(tag)
            connection.close()
            log.info("consumer stopped %s", fields(queue=self.config.queue))
        finally:
            self.ready.clear()
            self.publisher = None
            if connection.is_open:
                try:
                    connection.close()
                except pika.exceptions.AMQPError:
                    pass

    def on_cancelled(self, _frame) -> None:
        """The broker cancelled the consumer (its queue was deleted)."""
        self.consumer_cancelled = True

    # One delivery.

    def on_message(self, channel, method, properties, body: bytes) -> None:
        """Handles one delivery inside its CONSUMER span, a child of the
        context in its headers, then settles it (ack, requeue or reject)."""
        queue = self.config.queue
        started = time.perf_counter()
        with self.tracer.start_as_current_span(
            f"{queue} process",
            context=extract_context(properties.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                **messaging_attributes(
                    ("process", "deliver"), queue, properties.message_id, len(body)
                ),
                "messaging.rabbitmq.message.delivery_tag": method.delivery_tag,
            },
        ) as span:
            try:
                outcome, event_id, event_type, detail = self.answer(
                    properties, body, method.redelivered
                )
            except pika.exceptions.AMQPError:
                raise  # the session is broken: reconnect; the broker redelivers
            except Exception as error:  # a bug: retry once, then dead-letter
                log.exception("handling failed")
                span.record_exception(error)
                outcome = "dead_lettered" if method.redelivered else "requeued"
                event_id, event_type, detail = None, None, f"handler crashed: {error!r}"
            self.settle(channel, method.delivery_tag, outcome)
            if outcome != "answered":
                span.set_status(Status(StatusCode.ERROR, f"{outcome}: {detail}"))
            context = span.get_span_context()
            line = fields(
                queue=queue,
                event_id=event_id,
                type=event_type,
                outcome=outcome,
                detail=detail,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
                span_id=trace.format_span_id(context.span_id),
                trace_id=trace.format_trace_id(context.trace_id),
            )
            failed = outcome in ("dead_lettered", "requeued")
            log.log(logging.WARNING if failed else logging.INFO, "handled %s", line)

    def answer(self, properties, body: bytes, redelivered: bool) -> tuple:
        """Works out and publishes the answer to one request. Returns
        (outcome, event id, event type, detail): outcome is ``answered``,
        ``answered_error`` (an ``Error`` event went back), ``requeued`` or
        ``dead_lettered``."""
        if len(body) > self.config.max_message_bytes:
            return ("dead_lettered", None, None, "over MAX_MESSAGE_BYTES")
        try:
            request = parse_event(body)
            event_id, event_type = request["id"], request["type"]
            try:
                response = echo(request)
            except HandlerError as error:
                response = error_event(event_id, error.code, error.message)
        except NotAnEvent as error:
            if error.event_id is None or not properties.reply_to:
                return ("dead_lettered", error.event_id, None, str(error))
            event_id, event_type = error.event_id, None
            response = error_event(event_id, "invalid_input", str(error))
        if not properties.reply_to:
            return ("dead_lettered", event_id, event_type, "no reply_to")

        payload = encode_event(response)
        if len(payload) > self.config.max_message_bytes:
            response = error_event(
                event_id,
                "handler_failed",
                f"the response is over {self.config.max_message_bytes} bytes",
            )
            payload = encode_event(response)
        try:
            self.publish(properties.reply_to, response, payload, event_id, properties)
        except ReplyFailed as error:
            # A second failure for the same message is not a blip.
            outcome = "dead_lettered" if redelivered else "requeued"
            return (outcome, event_id, event_type, f"reply failed: {error}")
        if response["type"] == ERROR_EVENT_TYPE:
            return ("answered_error", event_id, event_type, response["data"]["message"])
        return ("answered", event_id, event_type, None)

    def publish(
        self, reply_to: str, response: dict, payload: bytes, request_id: str, request
    ) -> None:
        """Publishes the response to ``reply_to`` in a PRODUCER span and waits
        for the broker's confirm; raises ``ReplyFailed`` if it is refused."""
        with self.tracer.start_as_current_span(
            f"{reply_to} publish",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(
                ("send", "publish"), reply_to, response["id"], len(payload)
            ),
        ) as span:
            properties = reply_properties(response, request_id, request)
            try:
                # Blocks until the broker confirms (or returns) the message.
                self.publisher.basic_publish(
                    exchange="",
                    routing_key=reply_to,
                    body=payload,
                    properties=properties,
                    mandatory=True,
                )
            except pika.exceptions.UnroutableError:
                error = ReplyFailed(f"no queue is bound to routing key {reply_to!r}")
            except pika.exceptions.NackError:
                error = ReplyFailed("the broker refused the message (nack)")
            else:
                return
            span.set_status(Status(StatusCode.ERROR, str(error)))
            raise error

    @staticmethod
    def settle(channel, delivery_tag: int, outcome: str) -> None:
        if outcome == "requeued":
            channel.basic_nack(delivery_tag, requeue=True)
        elif outcome == "dead_lettered":
            channel.basic_reject(delivery_tag, requeue=False)
        else:
            channel.basic_ack(delivery_tag)


# --- Health probes -----------------------------------------------------------


def start_health_server(port: int, ready: threading.Event) -> ThreadingHTTPServer:
    """``GET /healthz``: 200 while the process runs. ``GET /readyz``: 200 while
    consuming, else 503. The same JSON bodies as the Rust services."""

    class Probes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self.reply(200, {"status": "ok"})
            elif path == "/readyz" and ready.is_set():
                self.reply(200, {"status": "ready"})
            elif path == "/readyz":
                self.reply(503, error_body("not_ready", "not consuming from RabbitMQ"))
            else:
                self.reply(404, error_body("not_found", "no such route"))

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Iterable) -> None:
            pass  # probes are polled often; no line per probe

    server = ThreadingHTTPServer(("0.0.0.0", port), Probes)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info(
        "health endpoint listening %s", fields(addr="{}:{}".format(*server.server_address[:2]))
    )
    return server


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


# --- Main --------------------------------------------------------------------


def main() -> int:
    setup_logging()
    config = Config.from_env()
    provider = setup_tracing()
    listener = Listener(config)

    received = []

    def on_signal(signum, _frame) -> None:
        # Only a flag here: logging from a signal handler can re-enter the
        # stream being written. The consume loop sees the flag within 250 ms.
        received.append(signal.Signals(signum).name)
        listener.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        health = start_health_server(config.port, listener.ready)
    except OSError as error:
        log.error("cannot serve the health port %s", fields(port=config.port, error=str(error)))
        return 1
    try:
        listener.run()
    finally:
        health.shutdown()
        health.server_close()
        provider.shutdown()  # flushes the batch of spans not yet exported
    log.info("listener stopped %s", fields(signal=received[0] if received else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
