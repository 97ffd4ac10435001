# Shared set-up for bin/test and bin/restart.sh: make sure what the project
# needs is there on a fresh machine. Sourced, not run.
#
# ensure_broker: a RabbitMQ answers on AMQP_URL; when none does and the URL
#   is local, install Debian's rabbitmq-server if missing and start it.
# ensure_tool CMD PKG: CMD is on PATH, installing Debian package PKG if not.

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export AMQP_URL

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    log "installing $* from Debian's packages"
    # policy-rc.d-less containers may refuse to start services: installing
    # must not depend on it, we start what we need ourselves.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_tool() {
    command -v "$1" >/dev/null || apt_install "$2"
    command -v "$1" >/dev/null || die "$1 still missing after installing $2"
}

# host and port of AMQP_URL (amqp://user:pass@host:port/vhost)
broker_host() { local a="${AMQP_URL#*://}"; a="${a%%/*}"; a="${a##*@}"; echo "${a%%:*}"; }
broker_port() { local a="${AMQP_URL#*://}"; a="${a%%/*}"; a="${a##*@}"; [[ "$a" == *:* ]] && echo "${a##*:}" || echo 5672; }

port_open() { timeout 1 bash -c ": </dev/tcp/$1/$2" 2>/dev/null; }

ensure_broker() {
    local host port
    host="$(broker_host)"; port="$(broker_port)"
    if port_open "$host" "$port"; then
        return 0
    fi
    case "$host" in
        127.0.0.1|localhost|::1) ;;
        *) die "no RabbitMQ answers at $host:$port (AMQP_URL) and it is not local, so it cannot be started here" ;;
    esac
    [ "$port" = 5672 ] || die "no RabbitMQ answers on $host:$port; only the default port 5672 is started automatically"
    ensure_tool rabbitmq-server rabbitmq-server
    log "starting RabbitMQ (rabbitmq-server -detached)"
    as_root rabbitmq-server -detached
    local waited=0
    until port_open "$host" "$port"; do
        sleep 1
        waited=$((waited + 1))
        [ "$waited" -lt 90 ] || die "RabbitMQ did not open $host:$port within 90 s; see /var/log/rabbitmq/"
    done
    log "RabbitMQ is up on $host:$port"
}
