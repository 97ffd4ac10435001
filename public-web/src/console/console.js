// The console's script: sends events with POST / and watches GET /events.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_LIVE_ROWS = 200;

async function send(text) {
  const meta = $("answer-meta");
  const answer = $("answer");
  let body;
  try {
    body = JSON.stringify(JSON.parse(text));
  } catch (error) {
    meta.textContent = "not JSON: " + error.message;
    meta.className = "meta error";
    return;
  }
  meta.textContent = "sending…";
  meta.className = "meta";
  const started = performance.now();
  try {
    const response = await fetch("/", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    const elapsed = (performance.now() - started).toFixed(1);
    const traceId = response.headers.get("x-trace-id") || "(not traced)";
    const json = await response.json().catch(() => null);
    meta.textContent = `${response.status} in ${elapsed} ms · trace ${traceId}`;
    meta.className = response.ok ? "meta" : "meta error";
    meta.dataset.status = String(response.status);
    meta.dataset.traceId = traceId;
    answer.textContent = JSON.stringify(json, null, 2);
  } catch (error) {
    meta.textContent = "request failed: " + error.message;
    meta.className = "meta error";
  }
}

let source = null;

function watch() {
  stop();
  const status = $("live-status");
  let filters;
  try {
    filters = JSON.stringify(JSON.parse($("filter").value || "[]"));
  } catch (error) {
    status.textContent = "filters are not JSON: " + error.message;
    status.className = "meta error";
    return;
  }
  const params = new URLSearchParams({ filter: filters });
  const token = $("token").value.trim();
  if (token) params.set("access_token", token);
  source = new EventSource("/events?" + params.toString());
  status.textContent = "connecting…";
  status.className = "meta";
  $("stop").disabled = false;
  source.onopen = () => {
    status.textContent = "watching";
    status.className = "meta";
  };
  source.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    const row = document.createElement("li");
    row.dataset.offset = message.lastEventId;
    row.dataset.type = event.type;
    row.dataset.id = event.id;
    row.textContent = `#${message.lastEventId} ${event.type} ${event.id} ${JSON.stringify(event.data)}`;
    const list = $("live");
    list.prepend(row);
    while (list.children.length > MAX_LIVE_ROWS) list.lastChild.remove();
  };
  source.onerror = () => {
    // EventSource reconnects by itself, sending Last-Event-ID; it gives up
    // only when the server refuses (a bad filter or token).
    if (source.readyState === EventSource.CLOSED) {
      status.textContent = "refused: check the filters and the token";
      status.className = "meta error";
      $("stop").disabled = true;
    } else {
      status.textContent = "disconnected; reconnecting…";
      status.className = "meta error";
    }
  };
}

function stop() {
  if (source) source.close();
  source = null;
  $("stop").disabled = true;
  $("live-status").textContent = "not watching";
}

$("ping").addEventListener("click", () => send('{"type": "PingRequest", "data": {}}'));
$("send").addEventListener("click", () => send($("event").value));
$("watch").addEventListener("click", watch);
$("stop").addEventListener("click", stop);
