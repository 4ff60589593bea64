#!/usr/bin/env bash
# Installs the system tools the build needs, if they are missing. Idempotent; safe to run every time.
#
#   cmake, nasm   libjpeg-turbo is built from source by the turbojpeg-sys crate (static, with SIMD), so
#                 JPEG pixels are the ones Pillow/libjpeg-turbo produce everywhere.
#   a C compiler  the same build (Debian's gcc; usually present wherever Rust is).
#   mesa-vulkan-drivers  (Linux) lavapipe, Mesa's software Vulkan driver: the GPU backend's tests run the
#                 real shaders on it when the machine has no GPU (CI). Brings libvulkan1 with it.
#   python3, python3-venv  the example gRPC client (examples/python/) runs in the test suite from a venv
#                 that scripts/setup-python-example.sh creates.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [ "$(uname -s)" = Linux ] && ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    need+=(mesa-vulkan-drivers)
fi
if ! command -v python3 >/dev/null 2>&1; then
    need+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=(python3-venv)
fi
command -v cargo >/dev/null 2>&1 || {
    echo "setup-deps: cargo not found; install Rust first (https://rustup.rs)" >&2
    exit 1
}

if ((${#need[@]})); then
    echo "setup-deps: installing ${need[*]}" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if command -v apt-get >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    elif command -v dnf >/dev/null 2>&1; then
        "${sudo[@]}" dnf install -y "${need[@]}"
    elif command -v brew >/dev/null 2>&1; then
        brew install "${need[@]}"
    else
        echo "setup-deps: please install: ${need[*]}" >&2
        exit 1
    fi
fi
