# syntax=docker/dockerfile:1
# The trust aggregator and its operator CLI, built in the Rust image and run on plain Debian
# 12, the Debian the Rust image is built on (SQLite is compiled in; the binaries need only glibc).
# Build context: the repository root (testbed/docker-compose.yml does this).
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:12-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile server --locked -p mcp-warden-aggregator --bins \
    && mkdir -p /out \
    && cp target/server/mcp-warden-aggregator target/server/mcp-warden-ctl /out/

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/ /usr/local/bin/
# The database directory belongs to the service's user, so a fresh volume mounted here does too.
RUN mkdir -p /var/lib/mcp-warden /etc/mcp-warden && chown 65532:65532 /var/lib/mcp-warden
USER 65532:65532
VOLUME ["/var/lib/mcp-warden"]
EXPOSE 8080
ENTRYPOINT ["mcp-warden-aggregator"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--db", "/var/lib/mcp-warden/trust.db", "--tokens", "/etc/mcp-warden/tokens.json"]
