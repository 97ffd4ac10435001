# The six services, one image each, from one build:
#
#   docker build --target public-web        -t public-web .
#   docker build --target dispatcher        -t dispatcher .
#   docker build --target ping-listener     -t ping-listener .
#   docker build --target prime-listener    -t prime-listener .
#   docker build --target scenario-listener -t scenario-listener .
#   docker build --target webhook-sender    -t webhook-sender .
#
# cargo-chef compiles the dependencies in a layer of their own, keyed only by
# the manifests and Cargo.lock, so editing the code rebuilds just the
# workspace crates. The builder compiles all six binaries at once: the
# targets share that stage, so `docker compose build` compiles once.
#
# Runtime: debian:12-slim (the builder's glibc) with curl for the compose
# healthchecks' GET /readyz, running as an unprivileged user.

FROM rust:1.95.0-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin public-web --bin dispatcher --bin ping-listener \
    --bin prime-listener --bin scenario-listener --bin webhook-sender

FROM debian:12.13-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin app
USER app
ENV RUST_LOG=info LOG_FORMAT=json

FROM runtime AS ping-listener
COPY --from=builder /app/target/release/ping-listener /usr/local/bin/ping-listener
ENV PORT=3002 OTEL_SERVICE_NAME=ping-listener
EXPOSE 3002
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3002/readyz"]
ENTRYPOINT ["/usr/local/bin/ping-listener"]

FROM runtime AS prime-listener
COPY --from=builder /app/target/release/prime-listener /usr/local/bin/prime-listener
ENV PORT=3003 OTEL_SERVICE_NAME=prime-listener
EXPOSE 3003
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3003/readyz"]
ENTRYPOINT ["/usr/local/bin/prime-listener"]

# The example scenarios ship in the image (owned by root, read-only for the
# service) and the working directory is /app, so SCENARIO_CONFIG may name
# one as bin/restart.sh does: examples/scenario-chain.yaml.
FROM runtime AS scenario-listener
COPY --from=builder /app/target/release/scenario-listener /usr/local/bin/scenario-listener
COPY examples/ /app/examples/
WORKDIR /app
ENV PORT=3004 OTEL_SERVICE_NAME=scenario-listener \
    SCENARIO_CONFIG=/app/examples/scenario-order.yaml
EXPOSE 3004
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3004/readyz"]
ENTRYPOINT ["/usr/local/bin/scenario-listener"]

FROM runtime AS dispatcher
COPY --from=builder /app/target/release/dispatcher /usr/local/bin/dispatcher
ENV PORT=3001 OTEL_SERVICE_NAME=dispatcher
EXPOSE 3001
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3001/readyz"]
ENTRYPOINT ["/usr/local/bin/dispatcher"]

FROM runtime AS public-web
COPY --from=builder /app/target/release/public-web /usr/local/bin/public-web
ENV PORT=3000 OTEL_SERVICE_NAME=public-web
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3000/readyz"]
ENTRYPOINT ["/usr/local/bin/public-web"]

# Its database migrations are compiled into the binary and applied at
# start; DATABASE_URL names the PostgreSQL (docker-compose.yml runs one).
FROM runtime AS webhook-sender
COPY --from=builder /app/target/release/webhook-sender /usr/local/bin/webhook-sender
ENV PORT=3006 OTEL_SERVICE_NAME=webhook-sender
EXPOSE 3006
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3006/readyz"]
ENTRYPOINT ["/usr/local/bin/webhook-sender"]
