# syntax=docker/dockerfile:1
#
# callrelay container image.
#
#   docker build -t callrelay:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/examples/dev.toml:/etc/callrelay/callrelay.toml:ro" \
#     -e CALLRELAY_CONFIG=/etc/callrelay/callrelay.toml \
#     -e CALLRELAY__SERVER__LISTEN=0.0.0.0:8080 -e CALLRELAY__SERVER__ADMIN_LISTEN=0.0.0.0:9090 \
#     callrelay:dev
#
# Two stages: a Debian 12 (bookworm) Rust toolchain builds the release binary, and a distroless
# Debian 12 image runs it. The builder must stay on bookworm: the binary links the builder's
# glibc dynamically, and a newer Debian (trixie, glibc 2.41) would produce a binary that needs
# symbols the runtime's glibc 2.36 lacks.

# The crate needs Rust 1.88 or newer (its rust-version); override with
# --build-arg RUST_VERSION=… to move the toolchain.
ARG RUST_VERSION=1.95

############################################################################################
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /app

# 1. Dependencies only, so that editing src/ does not rebuild every crate: build the locked
#    dependency graph against a stub library and binary. (The `[[test]] it` target's file is not
#    needed: `cargo build` does not build tests, and tests/ stays out of the context.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/callrelay target/release/.fingerprint/callrelay-* \
           target/release/deps/callrelay-* target/release/deps/libcallrelay-*

# 2. The real sources. The stubs' build outputs and fingerprints were removed above, so Cargo
#    rebuilds the callrelay crate itself (and only it) whatever the copied files' mtimes.
COPY src ./src
RUN cargo build --release --locked \
 && ./target/release/callrelay --version

############################################################################################
# glibc, libgcc, ca-certificates and tzdata, nothing else: no shell, no package manager.
# TLS is rustls, so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="callrelay" \
      org.opencontainers.image.description="Relays Twilio Voice call notifications to APNs, FCM and WebSockets" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /app/target/release/callrelay /usr/local/bin/callrelay

# The image's `nonroot` user (uid/gid 65532), written numerically: with a user *name*, a
# Kubernetes pod that sets runAsNonRoot cannot verify the user is not root and refuses to start.
USER 65532:65532

# Public listener (webhook, bindings API, WebSockets) and admin listener (/healthz, /readyz,
# /metrics). The defaults of server.listen and server.admin_listen already bind 0.0.0.0.
EXPOSE 8080 9090

# callrelay is PID 1 and handles SIGTERM itself: in-flight webhooks finish, WebSocket clients get
# a close frame, and this replica's presence is withdrawn, within server.shutdown_grace_ms.
ENTRYPOINT ["/usr/local/bin/callrelay"]
CMD ["serve"]
