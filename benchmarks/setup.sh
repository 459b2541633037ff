#!/usr/bin/env bash
# Make .venv-bench: pigeon (editable, with its Redis, PostgreSQL and NATS extras) and the peers of
# benchmarks/requirements-peers.txt, kept apart from the project's .venv.
#   benchmarks/setup.sh && .venv-bench/bin/python benchmarks/run.py
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench
.venv-bench/bin/pip install -q --upgrade pip
.venv-bench/bin/pip install -q -e '.[redis,postgres,nats]' -r benchmarks/requirements-peers.txt
echo "ready: .venv-bench/bin/python benchmarks/run.py --help"
