#!/usr/bin/env bash
# One command for every benchmark: `bench/run.sh [python -m bench options]` (the Makefile's `make bench`).
#
# Needs the project's virtualenv (.venv, `make install`). LiteLLM's proxy, OpenCV and py-spy
# go into a virtualenv of their own, bench/.venv-peers, created on first use; with
# BENCH_NO_INSTALL=1 (or no network) LiteLLM is simply left out of the comparison.
# Everything listens on 127.0.0.1 only and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PEERS=bench/.venv-peers
# The LiteLLM release the recorded figures were measured with; BENCH_LITELLM=litellm for the latest.
LITELLM_SPEC=${BENCH_LITELLM:-litellm[proxy]==1.108.7}

if [ ! -x .venv/bin/python ]; then
    echo "bench: .venv is missing; run 'make install' first" >&2
    exit 1
fi

if [ ! -x "$PEERS/bin/litellm" ] && [ -z "${BENCH_NO_INSTALL:-}" ]; then
    echo "bench: installing LiteLLM's proxy, OpenCV and py-spy into $PEERS (once)" >&2
    if "$PYTHON" -m venv "$PEERS" \
        && "$PEERS/bin/pip" install --quiet --upgrade pip \
        && "$PEERS/bin/pip" install --quiet "$LITELLM_SPEC" opencv-python-headless py-spy; then
        :
    else
        echo "bench: could not install the peers; LiteLLM and OpenCV are left out" >&2
    fi
fi

# Scenario 3 holds 10,000 client connections, and as many in the gateway and the emulator.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
if [ "$(ulimit -n)" -lt 30000 ]; then
    echo "bench: ulimit -n is $(ulimit -n); scenario 3 needs about 2 descriptors per stream per process" >&2
fi

exec .venv/bin/python -m bench "$@"
