#!/usr/bin/env bash
# run.sh: set up, then run trace-halfclose with kprobes: on this kernel when it
# has them, otherwise in a VM booting Debian's kernel (trace-halfclose vm).
#   sudo scripts/run.sh [ARGS...]      e.g. sudo scripts/run.sh --writes 3
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vm >&2
tracefs=/sys/kernel/tracing
[ -e "$tracefs/available_events" ] || mount -t tracefs nodev "$tracefs" 2>/dev/null || true
if [ -e "$tracefs/kprobe_events" ]; then
    exec .venv/bin/trace-halfclose "$@"
fi
echo "run.sh: this kernel ($(uname -r)) has no kprobes: running the reproduction in a VM with a Debian kernel (trace-halfclose vm)" >&2
exec .venv/bin/trace-halfclose vm -- "$@"
