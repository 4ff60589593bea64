# syntax=docker/dockerfile:1
#
# The Pharos container image: `pharos` on Debian bookworm (slim), run as an unprivileged user.
#
#   docker build -t pharos .                  # CPU only
#   docker build --build-arg GPU=1 -t pharos:gpu .   # + the Vulkan loader and Mesa's drivers (wgpu backend)
#
# The default command serves gRPC on 0.0.0.0:50051 with the settings of /etc/pharos/pharos.toml
# (deploy/container/pharos.toml): TLS and an auth file are required there, so mount them at /etc/pharos/tls
# (tls.crt, tls.key) and /etc/pharos/auth (auth.toml). README.md, "Container and Kubernetes", says how to
# run it, with or without an NVIDIA GPU. tests/deploy.rs checks this file against the Kubernetes manifests.

ARG RUST_VERSION=1.90
ARG DEBIAN_RELEASE=bookworm

# ---- build: the release binary -------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# libjpeg-turbo is built from source (cmake, nasm); libwebp and ring need the C compiler the image has.
ARG BUILD_PACKAGES="cmake nasm"
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${BUILD_PACKAGES} \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads (Cargo.toml names the benches and tests, so they must be present too).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY shaders shaders
COPY benches benches
COPY tests tests
COPY src src
# The crate registry and target/ live in BuildKit cache mounts: a rebuild after a source change recompiles
# pharos, not its ~400 dependencies. The binary is copied out of the cache mount so the next stage sees it.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin pharos \
    && install -D -m 0755 target/release/pharos /out/pharos

# ---- runtime: no compilers, no Rust --------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# GPU=1 adds the Vulkan loader (libvulkan1) and Mesa's drivers: wgpu finds the GPU through them. With the
# NVIDIA Container Toolkit the NVIDIA Vulkan driver is injected at run time (see README.md). Without them
# `--backend auto` hashes on the CPU.
ARG GPU=0
ARG RUNTIME_PACKAGES="ca-certificates"
ARG GPU_PACKAGES="libvulkan1 mesa-vulkan-drivers"
RUN set -eu; \
    packages="${RUNTIME_PACKAGES}"; \
    if [ "${GPU}" = 1 ]; then packages="${packages} ${GPU_PACKAGES}"; fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages}; \
    rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so volume permissions and Kubernetes' runAsUser can name it (deploy/kubernetes uses 10001).
ARG PHAROS_UID=10001
RUN groupadd --system --gid "${PHAROS_UID}" pharos \
    && useradd --system --uid "${PHAROS_UID}" --gid pharos --home-dir /var/lib/pharos --no-create-home \
       --shell /usr/sbin/nologin pharos \
    && install -d -o pharos -g pharos -m 0750 /var/lib/pharos \
    && install -d -m 0755 /etc/pharos /etc/pharos/tls /etc/pharos/auth

COPY --from=build /out/pharos /usr/local/bin/pharos
COPY deploy/container/pharos.toml /etc/pharos/pharos.toml

# The bank store (redb) lives here when no database is configured; also `pharos bank …` inside the container.
# An environment variable outranks data_dir in a config file.
ENV PHAROS_DATA_DIR=/var/lib/pharos
USER ${PHAROS_UID}:${PHAROS_UID}
WORKDIR /var/lib/pharos

# gRPC (TLS), plaintext gRPC health for probes, Prometheus metrics.
EXPOSE 50051 50052 9464
ENTRYPOINT ["pharos"]
CMD ["serve", "--config", "/etc/pharos/pharos.toml"]
