# syntax=docker/dockerfile:1
#
# tower-failover-gateway in a container.
#
#   docker build -t tower-failover-gateway .
#   docker run --rm -p 8080:8080 tower-failover-gateway            # simulated providers
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY \
#     -v "$PWD/gateway.toml:/etc/tower-failover/gateway.toml:ro" \
#     tower-failover-gateway --config /etc/tower-failover/gateway.toml
#
# The build needs crates.io (or a vendored registry); the runtime image has no shell,
# no package manager, and runs as an unprivileged user.

ARG RUST_VERSION=1.95

# ---- build ----
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between runs; the binary is copied
# out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tower-failover-gateway \
 && install -D -m 0755 target/release/tower-failover-gateway /out/tower-failover-gateway

# ---- run ----
# Distroless: glibc, CA certificates (for the providers' TLS), a `nonroot` user, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tower-failover-gateway /usr/local/bin/tower-failover-gateway
USER nonroot:nonroot
ENV TOWER_FAILOVER_LISTEN=0.0.0.0:8080 \
    TOWER_FAILOVER_LOG_FORMAT=json
EXPOSE 8080
# The public liveness route, asked by the binary itself (the image has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tower-failover-gateway", "--probe"]
# SIGTERM drains requests in flight for `[server] drain_timeout` (30 s); give
# `docker stop --time` at least that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tower-failover-gateway"]
