#!/usr/bin/env bash
# Re-resolve infra/trainer/requirements.lock: the trainer image's full pin set.
# Every package shared with requirements.lock keeps that version (the main lock is
# the constraint); torch is the CUDA build from PyPI with its CUDA wheels pinned here.
# Run after `./run lock`; tests/infra checks the two locks agree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
uv="${UV:-.venv/bin/uv}"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
grep -v '^torch==' requirements.lock >"$constraints"
"$uv" pip compile infra/trainer/requirements.txt --constraint "$constraints" \
    --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --no-annotate \
    --custom-compile-command "infra/trainer/lock.sh" -o infra/trainer/requirements.lock
