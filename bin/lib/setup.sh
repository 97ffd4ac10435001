# Shared set-up for bin/test and bin/restart.sh: make sure what the project
# needs is there on a fresh machine. Sourced, not run.
#
# ensure_broker: a RabbitMQ answers on AMQP_URL; when none does and the URL
#   is local, install Debian's rabbitmq-server if missing and start it.
# ensure_tool CMD PKG: CMD is on PATH, installing Debian package PKG if not.
# ensure_postgres: a PostgreSQL answers on DATABASE_URL's host and port;
#   when none does and the URL is local, install Debian's postgresql if
#   missing, start its cluster and give the postgres user the URL's password.
# ensure_database: the database DATABASE_URL names exists.

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export AMQP_URL
DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/dispatcher}"
export DATABASE_URL

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

# await_port HOST PORT SECONDS WHAT LOGS: waits until a server just started
# opens HOST:PORT, or fails naming WHAT and where its logs are.
await_port() {
    local waited=0
    until port_open "$1" "$2"; do
        sleep 1
        waited=$((waited + 1))
        [ "$waited" -lt "$3" ] || die "$4 did not open $1:$2 within $3 s; see $5"
    done
}

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
    await_port "$host" "$port" 90 "RabbitMQ" /var/log/rabbitmq/
    log "RabbitMQ is up on $host:$port"
}

# postgres://user:password@host:port/database, each part of DATABASE_URL
db_part() {
    local url="${DATABASE_URL#*://}" auth="" hostport database
    [[ "$url" == *@* ]] && { auth="${url%%@*}"; url="${url#*@}"; }
    hostport="${url%%/*}"; database="${url#*/}"; database="${database%%\?*}"
    case "$1" in
        user) echo "${auth%%:*}" ;;
        password) [[ "$auth" == *:* ]] && echo "${auth#*:}" ;;
        host) echo "${hostport%%:*}" ;;
        port) [[ "$hostport" == *:* ]] && echo "${hostport##*:}" || echo 5432 ;;
        database) echo "$database" ;;
    esac
}

ensure_postgres() {
    local host port version
    host="$(db_part host)"; port="$(db_part port)"
    if port_open "$host" "$port"; then
        return 0
    fi
    case "$host" in
        127.0.0.1|localhost|::1) ;;
        *) die "no PostgreSQL answers at $host:$port (DATABASE_URL) and it is not local, so it cannot be started here" ;;
    esac
    [ "$port" = 5432 ] || die "no PostgreSQL answers on $host:$port; only the default port 5432 is started automatically"
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$version" ] || die "postgresql is installed but has no cluster in /etc/postgresql"
    log "starting PostgreSQL $version (pg_ctlcluster $version main start)"
    as_root pg_ctlcluster "$version" main start
    await_port "$host" "$port" 60 "PostgreSQL" /var/log/postgresql/
    # A fresh cluster lets its postgres user in over the local socket only:
    # give it the URL's password so the services can log in over TCP.
    if [ "$(db_part user)" = postgres ] && [ -n "$(db_part password)" ]; then
        as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD '$(db_part password)'\"" >/dev/null
    fi
    log "PostgreSQL is up on $host:$port"
}

ensure_database() {
    local database admin
    ensure_tool psql postgresql-client
    database="$(db_part database)"
    admin="${DATABASE_URL%/*}/postgres"
    if [ -z "$(psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
        log "creating the database $database"
        psql -q "$admin" -c "CREATE DATABASE \"$database\"" >/dev/null
    fi
}
