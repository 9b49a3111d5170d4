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
# For a release, label the image with what it was built from (OCI image annotations):
#
#   docker build -t callrelay:0.2.1 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE=https://github.com/<you>/callrelay .
#
# Two stages: a Debian 12 (bookworm) Rust toolchain builds the release binary, and a distroless
# Debian 12 image runs it. The builder must stay on bookworm: the binary links the builder's
# glibc dynamically, and a newer Debian (trixie, glibc 2.41) would produce a binary that needs
# symbols the runtime's glibc 2.36 lacks.
#
# The base images are named by tag, not by digest: no digest could be checked where this file
# was written (no registry was reachable), and a digest nobody verified is worse than none. To
# pin them, resolve each tag where you build and append it, e.g.
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot   # "Digest: sha256:…"
#   FROM gcr.io/distroless/cc-debian12:nonroot@sha256:…
#
# CI cannot run Docker; `.ci/image-context` lays out the build context as .dockerignore filters
# it, replays the builder stage's COPY and RUN lines there, and runs the HEALTHCHECK below
# against the binary it built.

# The crate needs Rust 1.88 or newer (its rust-version); override with
# --build-arg RUST_VERSION=… to move the toolchain.
ARG RUST_VERSION=1.95

############################################################################################
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /app

# 1. Dependencies only, so that editing src/ does not rebuild every crate: build the locked
#    dependency graph against a stub library and binary. (The `[[test]] it` target's file is not
#    needed: `cargo build` does not build tests, and tests/ stays out of the context. The
#    workspace's other member, testkit/, the tests' mocks, is never built here, but Cargo reads
#    every member's manifest: its manifest and an empty library stand in for it.)
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml ./testkit/
RUN mkdir src testkit/src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && : > testkit/src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/callrelay target/release/.fingerprint/callrelay-* \
           target/release/deps/callrelay-* target/release/deps/libcallrelay-*

# 2. The real sources, and the binding schemas and examples the OpenAPI document includes. The stubs' build
#    outputs and fingerprints were removed above, so Cargo rebuilds the callrelay crate itself
#    (and only it) whatever the copied files' mtimes. The revision is declared here, not
#    earlier, so that a new commit does not invalidate the dependency layer.
COPY bindings-schema ./bindings-schema
COPY src ./src
ARG REVISION=unknown
RUN CALLRELAY_REVISION="$REVISION" cargo build --release --locked \
 && ./target/release/callrelay --version

############################################################################################
# glibc, libgcc, ca-certificates and tzdata, nothing else: no shell, no package manager.
# TLS is rustls, so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot

# VERSION is Cargo.toml's (.ci/image-context checks they agree); REVISION the commit, also
# reported by `callrelay --version` and the callrelay_build_info metric; SOURCE the repository's
# URL.
ARG VERSION=0.2.1
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="callrelay" \
      org.opencontainers.image.description="Relays Twilio Voice call notifications to APNs, FCM and WebSockets" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

COPY --from=builder /app/target/release/callrelay /usr/local/bin/callrelay

# The image's `nonroot` user (uid/gid 65532), written numerically: with a user *name*, a
# Kubernetes pod that sets runAsNonRoot cannot verify the user is not root and refuses to start.
USER 65532:65532

# Public listener (webhook, bindings API, WebSockets) and admin listener (/healthz, /readyz,
# /metrics). The defaults of server.listen and server.admin_listen already bind 0.0.0.0.
EXPOSE 8080 9090

# Docker's (and Compose's, Swarm's, Nomad's) health state: `callrelay healthcheck` asks the
# admin listener's /healthz, at the address the configuration gives (CALLRELAY_CONFIG and
# CALLRELAY__… are the container's), and exits 0 or 1. Exec form: the image has no shell.
# Liveness only: a Redis outage must not make orchestrators restart every replica (/readyz,
# with `healthcheck --ready`, is for routing). Kubernetes ignores HEALTHCHECK and uses the
# probes in k8s/deployment.yaml.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/callrelay", "healthcheck"]

# callrelay is PID 1 and handles SIGTERM itself: in-flight webhooks finish, WebSocket clients get
# a close frame, and this replica's presence is withdrawn, within server.shutdown_grace_ms.
ENTRYPOINT ["/usr/local/bin/callrelay"]
CMD ["serve"]
