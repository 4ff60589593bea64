#!/usr/bin/env bash
# The whole test suite, as CI runs it: system deps, formatting, lints, every test, benches compile.
#
# Uses the full reference corpus when PHAROS_CORPUS points at it (default: ../shared/testdata when that
# exists), otherwise the fixtures carried in tests/fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-deps.sh

# The Python example client's venv (tests/python_client.rs runs examples/python/pharos_client.py with it).
if PHAROS_PYTHON="$(scripts/setup-python-example.sh | tail -n 1)"; then
    export PHAROS_PYTHON
else
    echo "test.sh: Python example venv unavailable; tests/python_client.rs will skip (fails under PHAROS_REQUIRE_PYTHON=1)" >&2
fi

# python-threatexchange, the reference for the partner formats it defines (tests/bank_formats.rs).
if PHAROS_PYTX_PYTHON="$(scripts/setup-pytx.sh | tail -n 1)"; then
    export PHAROS_PYTX_PYTHON
else
    echo "test.sh: python-threatexchange venv unavailable; its oracle tests in tests/bank_formats.rs will skip (fail under PHAROS_REQUIRE_PYTHON=1)" >&2
fi

# kubernetes-validate, the offline schema check of deploy/kubernetes (tests/deploy.rs).
if PHAROS_KUBEVAL_PYTHON="$(scripts/setup-kubeval.sh | tail -n 1)"; then
    export PHAROS_KUBEVAL_PYTHON
else
    echo "test.sh: kubernetes-validate venv unavailable; the manifest tests in tests/deploy.rs will skip (fail under PHAROS_REQUIRE_PYTHON=1)" >&2
fi

# PostgreSQL for the fleet tests: tests/fleet.rs starts a throwaway cluster per test with setup-postgres.sh
# (Debian's package, installed here when missing).
if ! scripts/setup-postgres.sh install; then
    echo "test.sh: PostgreSQL unavailable; tests/fleet.rs will skip (fails under CI or PHAROS_REQUIRE_POSTGRES=1)" >&2
fi

# Mesa's Vulkan driver complains on stderr for every adapter probe when this is unset (containers, CI).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
fi

if [ -z "${PHAROS_CORPUS:-}" ] && [ -f ../shared/testdata/expected.tsv ]; then
    PHAROS_CORPUS="$(cd ../shared/testdata && pwd)"
fi
export PHAROS_CORPUS="${PHAROS_CORPUS:-}"
echo "test.sh: corpus: ${PHAROS_CORPUS:-tests/fixtures (PHAROS_CORPUS not set)}"

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo bench --locked --no-run
# Bounded, so that a test that hangs fails the run with a message instead of silently using up CI's
# 90 minutes (a whole CI run takes 25-28 minutes); libtest names each test stuck for over
# 60 s in its output. PHAROS_TEST_TIMEOUT_MIN changes the bound.
minutes="${PHAROS_TEST_TIMEOUT_MIN:-50}"
status=0
timeout --kill-after=60 "$((minutes * 60))" cargo test --locked --release -- --show-output || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "test.sh: stopped after $minutes minutes: a test hangs (see 'running for over 60 seconds' above)" >&2
fi
[ "$status" -eq 0 ] || exit "$status"
# The exhaustive check behind PDQ's reciprocal division (every significand, every count up to 1024; about
# 8 s on 2 cores in release): ignored in the default run only because unoptimised builds would take hours.
cargo test --locked --release --lib reciprocal_division_is_exact_for_every_significand -- --ignored
