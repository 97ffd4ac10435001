# Shared by bin/bench and bin/instructions: a run directory, copies of the
# binaries, services started on free ports with unique queue names, and a
# cleanup that stops them and deletes the queues. Sourced after setup.sh.
#
# new_run PREFIX: sets RUN_ID, OUT (results, logs) and BIN (binaries).
# copy_binaries NAME...: copies target/release/NAME into BIN, so another
#   build in the shared target/ cannot swap a binary mid-run.
# free_port, start, wait_ready, wait_port, stack, start_sink: below.
# create_run_database NAME: a PostgreSQL database for this run (its URL in
#   RUN_DATABASE_URL), dropped by cleanup.
# cleanup: the EXIT trap: stops what start started, deletes QUEUES and the
#   run's databases.

# Nothing of the caller's telemetry set-up may leak into the services:
# "tracing off" must mean no OpenTelemetry layer at all.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(OTEL_|TRACE_FILE_DIR$)' || true)
export RUST_LOG=info
# The services sign their internal hops as a deployment's do: one secret
# per run, callbacks to this machine only.
CALLBACK_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CALLBACK_SECRET CALLBACK_ALLOW=127.0.0.0/8

# A command to run a service under, by binary name (e.g. a profiler).
declare -A WRAP=()
# Extra VAR=VALUE for every service started.
SERVICE_ENV=()
# How long a service may take to answer /readyz.
READY_WITHIN_S=30

new_run() {
    RUN_ID="$1-$(date +%Y%m%d%H%M%S)-$$"
    OUT="out/$1/$RUN_ID"
    BIN="$OUT/bin"
    mkdir -p "$OUT/logs" "$BIN"
    log "run $RUN_ID: results and logs in $OUT"
}

copy_binaries() {
    local binary
    for binary in "$@"; do cp "target/release/$binary" "$BIN/"; done
}

PIDS=()
QUEUES=()
DATABASES=()
create_run_database() {
    local name="${RUN_ID//[^a-zA-Z0-9]/_}_$1"
    ensure_tool psql postgresql-client
    psql -q "${DATABASE_URL%/*}/postgres" -c "CREATE DATABASE \"$name\"" >/dev/null
    DATABASES+=("$name")
    RUN_DATABASE_URL="${DATABASE_URL%/*}/$name"
}
cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "${#QUEUES[@]}" -gt 0 ]; then
        "$BIN/amqp-admin" delete-queues "${QUEUES[@]}" 2>>"$OUT/logs/cleanup.log" \
            || printf 'warning: could not delete the queues %s (see %s)\n' "${QUEUES[*]}" "$OUT/logs/cleanup.log" >&2
    fi
    local database
    for database in "${DATABASES[@]}"; do
        psql -q "${DATABASE_URL%/*}/postgres" -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>>"$OUT/logs/cleanup.log" \
            || printf 'warning: could not drop the database %s (see %s)\n' "$database" "$OUT/logs/cleanup.log" >&2
    done
    rm -rf "$BIN"
    exit "$status"
}
# free_port VAR: sets VAR to a port no socket uses, below the ephemeral
# range (so no outgoing connection can take it meanwhile) and away from the
# services' defaults (3000-3004) that bin/restart.sh uses. Not run in a
# subshell: TAKEN must remember the ports handed out but not yet bound.
TAKEN=" "
free_port() {
    local candidate
    for _ in $(seq 200); do
        candidate=$((21000 + RANDOM % 10000))
        case "$TAKEN" in *" $candidate "*) continue ;; esac
        if [ -z "$(ss -Htan "sport = :$candidate" 2>/dev/null)" ] && ! port_open 127.0.0.1 "$candidate"; then
            TAKEN+="$candidate "
            printf -v "$1" '%s' "$candidate"
            return 0
        fi
    done
    die "no free port found"
}

# start NAME LOGNAME [VAR=VALUE...] [-- ARG...]: runs a copied binary with
# extra env and arguments, under the command in WRAP[NAME] if one is set
# (a profiler); its pid goes into PIDS and into the variable PID_<LOGNAME>.
start() {
    local name="$1" logname="$2" vars=()
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do vars+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    # shellcheck disable=SC2086 # the wrapper is a command line, split on purpose
    env "${vars[@]}" ${SERVICE_ENV[@]+"${SERVICE_ENV[@]}"} ${WRAP[$name]:-} "$BIN/$name" "$@" \
        >"$OUT/logs/$logname.log" 2>&1 &
    PIDS+=("$!")
    printf -v "PID_${logname//-/_}" '%s' "$!"
}

wait_ready() {
    local logname="$1" port="$2" pid_var="PID_${1//-/_}"
    for _ in $(seq "$((READY_WITHIN_S * 10))"); do
        kill -0 "${!pid_var}" 2>/dev/null || {
            tail -n 20 "$OUT/logs/$logname.log" >&2
            die "$logname exited during start-up; see $OUT/logs/$logname.log"
        }
        curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$logname not ready on :$port within $READY_WITHIN_S s; see $OUT/logs/$logname.log"
}

# wait_port LOGNAME PORT: waits until the process started as LOGNAME
# listens on PORT (for processes without /readyz).
wait_port() {
    local logname="$1" port="$2" pid_var="PID_${1//-/_}"
    for _ in $(seq "$((READY_WITHIN_S * 10))"); do
        port_open 127.0.0.1 "$port" && return 0
        kill -0 "${!pid_var}" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$OUT/logs/$logname.log" >&2
    die "$logname is not listening on :$port; see $OUT/logs/$logname.log"
}

# stack NAME [VAR=VALUE...]: public-web, dispatcher and ping-listener on
# their own ports and queues, with the extra env; sets PORT_<NAME>
# (public-web's) and DISPATCHER_PORT_<NAME>.
stack() {
    local stack="$1" pw dp lp queue responses
    shift
    free_port pw; free_port dp; free_port lp
    queue="$RUN_ID-$stack-ping"
    responses="$RUN_ID-$stack-responses"
    events="$RUN_ID-$stack-events"
    QUEUES+=("$queue" "$queue.dead" "$responses" "$responses.dead" "$events")
    start ping-listener "$stack-ping-listener" PORT="$lp" QUEUE="$queue" "$@"
    start dispatcher "$stack-dispatcher" PORT="$dp" ROUTES="PingRequest=$queue" \
        RESPONSE_QUEUE="$responses" EVENT_STREAM="$events" "$@"
    start public-web "$stack-public-web" PORT="$pw" DISPATCHER_URL="http://127.0.0.1:$dp" \
        EVENT_STREAM="$events" "$@"
    wait_ready "$stack-ping-listener" "$lp"
    wait_ready "$stack-dispatcher" "$dp"
    wait_ready "$stack-public-web" "$pw"
    printf -v "PORT_$stack" '%s' "$pw"
    printf -v "DISPATCHER_PORT_$stack" '%s' "$dp"
    log "$stack stack up: public-web :$pw, dispatcher :$dp, ping-listener :$lp"
}

# start_sink PROTOCOL: starts bench's otlp-sink on free ports; sets
# SINK_HTTP (its HTTP port, which also serves /stats) and OTLP_ENV (the
# variables that point a service at it over PROTOCOL: grpc or
# http/protobuf).
start_sink() {
    local grpc_port port
    free_port grpc_port
    free_port SINK_HTTP
    start otlp-sink otlp-sink -- --grpc-port "$grpc_port" --http-port "$SINK_HTTP"
    wait_port otlp-sink "$SINK_HTTP"
    port="$SINK_HTTP"
    [ "$1" = grpc ] && port="$grpc_port"
    OTLP_ENV=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" OTEL_EXPORTER_OTLP_PROTOCOL="$1")
}
