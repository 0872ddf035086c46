#!/usr/bin/env bash
# test.sh: set up (scripts/setup.sh --test) and run every test: unit tests,
# live BPF tests on this kernel, and the kprobe tests in VMs (Debian 6.1 and 6.12).
# With CI=true a missing prerequisite fails instead of skipping.
#   sudo scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -ra tests "$@"
