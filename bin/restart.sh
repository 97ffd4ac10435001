#!/usr/bin/env bash
# Builds the workspace (release) and (re)starts the services natively in the
# background: logs in out/logs/, pid files in out/pids/. Stops the ones it
# started before, waits until each is ready, and fails naming the service and
# its log if one does not come up.
set -euo pipefail
cd "$(dirname "$0")/.."
source bin/lib/setup.sh

PUBLIC_WEB_PORT="${PUBLIC_WEB_PORT:-3000}"
DISPATCHER_PORT="${DISPATCHER_PORT:-3001}"
PING_LISTENER_PORT="${PING_LISTENER_PORT:-3002}"
PRIME_LISTENER_PORT="${PRIME_LISTENER_PORT:-3003}"
SCENARIO_LISTENER_PORT="${SCENARIO_LISTENER_PORT:-3004}"
WEBHOOK_SENDER_PORT="${WEBHOOK_SENDER_PORT:-3006}"
# name:port, in start order (any order works; this one is ready soonest)
SERVICES=(
    "ping-listener:$PING_LISTENER_PORT"
    "prime-listener:$PRIME_LISTENER_PORT"
    "scenario-listener:$SCENARIO_LISTENER_PORT"
    "dispatcher:$DISPATCHER_PORT"
    "public-web:$PUBLIC_WEB_PORT"
    "webhook-sender:$WEBHOOK_SENDER_PORT"
)
# Exported for every service; each reads only its own. Every event type of
# both example scenarios is routed to scenario-listener's queue, so either
# example works as SCENARIO_CONFIG.
SCENARIO_TYPES=(OrderRequest InventoryRequest PaymentRequest
    GatewayRequest AuthRequest ProfileRequest StorageRequest CacheRequest)
export ROUTES="${ROUTES:-PingRequest=ping-request,NthPrimeRequest=prime-request$(printf ',%s=scenario-request' "${SCENARIO_TYPES[@]}")}"
export SCENARIO_CONFIG="${SCENARIO_CONFIG:-examples/scenario-order.yaml}"
# scenario-listener's calls go to the public-web started here.
export PUBLIC_WEB_URL="http://127.0.0.1:$PUBLIC_WEB_PORT"
mkdir -p out/logs out/pids
# public-web and the dispatcher share the secret that signs the internal
# hops: made once, kept in out/ (git-ignored, readable by the owner only).
# dev_secret FILE: out/FILE, made once with 32 random bytes in hex,
# readable by the owner only (out/ is git-ignored).
dev_secret() {
    [ -s "out/$1" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"out/$1")
    printf '%s' "$PWD/out/$1"
}
if [ -z "${CALLBACK_SECRET:-}" ] && [ -z "${CALLBACK_SECRET_FILE:-}" ]; then
    CALLBACK_SECRET_FILE="$(dev_secret callback-secret)"
    export CALLBACK_SECRET_FILE
fi
# Live subscriptions: a development key for subscriber tokens (HS256, kept
# in out/ like the secret above), and anonymous subscriptions on, so that
# `curl -N localhost:3000/events?type=PingResponse` works locally. Never
# enable SUBSCRIBE_ANONYMOUS in a deployment.
if [ -z "${SUBSCRIBE_JWT_HS256_KEY:-}" ]; then
    SUBSCRIBE_JWT_HS256_KEY="$(cat "$(dev_secret subscribe-key)")"
    export SUBSCRIBE_JWT_HS256_KEY
fi
export SUBSCRIBE_ANONYMOUS="${SUBSCRIBE_ANONYMOUS:-true}"
# Webhooks: the management API's token (kept in out/ like the secret
# above: `Authorization: Bearer $(cat out/admin-token)`), and receivers on
# this machine allowed. A deployment allows no private address.
if [ -z "${ADMIN_TOKEN:-}" ]; then
    ADMIN_TOKEN="$(cat "$(dev_secret admin-token)")"
    export ADMIN_TOKEN
fi
export WEBHOOK_ALLOW_CIDRS="${WEBHOOK_ALLOW_CIDRS:-127.0.0.0/8}"
# public-web serves /dispatch on a fixed internal port, and callbacks go
# there and nowhere else.
export DISPATCH_PORT="${DISPATCH_PORT:-3010}"
export CALLBACK_ALLOW="${CALLBACK_ALLOW:-http://127.0.0.1:$DISPATCH_PORT}"

stop_service() {
    local name="$1" pidfile="out/pids/$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

start_service() {
    local name="$1" port="$2"
    PORT="$port" DISPATCHER_URL="http://127.0.0.1:$DISPATCHER_PORT" \
        TRACE_FILE_DIR="${TRACE_FILE_DIR-$PWD/out/traces}" \
        nohup "target/release/$name" >"out/logs/$name.log" 2>&1 &
    echo $! >"out/pids/$name.pid"
}

wait_ready() {
    local name="$1" port="$2" pid
    pid="$(cat "out/pids/$name.pid")"
    for _ in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "out/logs/$name.log" >&2 || true
            die "$name exited during start-up; see out/logs/$name.log"
        fi
        if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
            log "$name ready on :$port"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "out/logs/$name.log" >&2 || true
    die "$name not ready on :$port within 30 s; see out/logs/$name.log"
}

# Dead-letter queues an older version declared lack the byte cap, and the
# broker refuses to redeclare them with it (the services then log what to
# do). They hold only dead letters: when rabbitmqctl may be used here,
# recreate them.
recreate_old_dead_letter_queues() {
    local ours queue
    command -v rabbitmqctl >/dev/null 2>&1 || return 0
    ours=" $(printf '%s\n' "${ROUTES//,/$'\n'}" | cut -d= -f2 | sort -u | tr '\n' ' ')${RESPONSE_QUEUE:-dispatcher-responses} "
    rabbitmqctl -q list_queues name arguments 2>/dev/null |
        awk '$1 ~ /\.dead$/ && $0 !~ /x-max-length-bytes/ {print $1}' |
        while read -r queue; do
            case "$ours" in *" ${queue%.dead} "*) ;; *) continue ;; esac
            log "recreating $queue: an older version declared it without its byte cap"
            rabbitmqctl -q delete_queue "$queue" >/dev/null || true
        done
}

ensure_broker
ensure_postgres
ensure_database
ensure_tool curl curl
recreate_old_dead_letter_queues
log "building (release)"
cargo build --release --quiet -p public-web -p dispatcher -p ping-listener \
    -p prime-listener -p scenario-listener -p webhook-sender

for entry in "${SERVICES[@]}"; do stop_service "${entry%%:*}"; done
for entry in "${SERVICES[@]}"; do start_service "${entry%%:*}" "${entry##*:}"; done
for entry in "${SERVICES[@]}"; do wait_ready "${entry%%:*}" "${entry##*:}"; done
log "all services up; try bin/req"
