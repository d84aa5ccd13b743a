#!/usr/bin/env bash
# The opt-in run of the slow tests (real builds of large packages, `-m slow`):
#
#   tests/run_slow.sh                                    every slow test
#   tests/run_slow.sh tests/test_chain_and_guest.py -v   extra arguments go to pytest
#
# It first sets up like CI plus the bootstrap Go of the sandbox's go1.23.1 (setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./setup.sh --no-build --with-go
exec .venv/bin/python -m pytest -m slow "$@"
