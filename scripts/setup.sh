#!/usr/bin/env bash
# setup.sh: install what trace-halfclose needs on Debian 12 (run as root).
# The one install script: the README, .ci/run (through scripts/test.sh) and
# the Vagrantfile all call it, so there is no second list of steps.
#
#   scripts/setup.sh            bcc, headers, the venv with the tool
#   scripts/setup.sh --vm       also a Debian kernel, qemu and virtme-ng for `trace-halfclose vm`
#   scripts/setup.sh --test     also pytest, Debian's 6.12 kernel, and vagrant (to validate the Vagrantfile)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# The venv; THC_VENV puts it elsewhere (the Vagrant guest keeps it out of the shared tree).
VENV=${THC_VENV:-$ROOT/.venv}
VM=0 TEST=0
for a in "$@"; do
    case "$a" in
        --vm) VM=1 ;;
        --test) TEST=1 VM=1 ;;
        *) echo "setup.sh: unknown option $a (use --vm or --test)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (sudo $0 $*)" >&2; exit 1; }

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
release=$(uname -r)

# --- Debian packages -----------------------------------------------------------
updated=0
quiet() { local log; log=$(mktemp); "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; echo "setup.sh: failed: $*" >&2; exit 1; }; rm -f "$log"; }
apt_update() { [ "$updated" = 1 ] || { quiet apt-get update; updated=1; }; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

pkgs=(bpfcc-tools python3-bpfcc python3-venv iproute2 linux-headers-amd64)
[ "$VM" = 1 ] && pkgs+=(linux-image-amd64 qemu-system-x86 busybox-static)
# Tests boot both Debian kernels, 6.1 and 6.12, to compare them; curl is a real program watch annotates.
[ "$TEST" = 1 ] && pkgs+=(vagrant bpftool linux-image-6.12-amd64 linux-headers-6.12-amd64 ncat gcc curl)
# tests/live/test_native_pcap.py reads --pcap's file with both. tshark's install asks whether
# non-root users may capture: answered here (no), so the install never waits for a person.
if [ "$TEST" = 1 ]; then
    pkgs+=(tcpdump tshark)
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
fi
# Headers of the running kernel, when it is one Debian packages (not a microVM's).
if [ ! -e "/lib/modules/$release/build" ] && ! installed "linux-headers-$release"; then
    apt_update
    apt-cache show "linux-headers-$release" >/dev/null 2>&1 && pkgs+=("linux-headers-$release")
fi

missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt_update
    quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# --- kernel headers for bcc ------------------------------------------------------
# bcc compiles against /lib/modules/$(uname -r)/build. A kernel Debian does not
# package (a microVM's) has none: then link Debian's generic headers there.
# bcc needs them only to compile; the BPF programs read socket fields at
# offsets from this kernel's BTF, never from these headers' structs.
if [ ! -e "/lib/modules/$release/build" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
    if [ -n "$hdr" ]; then
        say "no headers for $release: linking $hdr for bcc (struct layouts come from BTF)"
        mkdir -p "/lib/modules/$release"
        ln -sfn "$hdr" "/lib/modules/$release/build"
        [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$release/source"
    fi
fi

# --- the venv ----------------------------------------------------------------------
# Debian's bcc imports only in /usr/bin/python3: the venv must see system site-packages.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
    say "creating $VENV (with Debian's bcc)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
extras=""
[ "$VM" = 1 ] && extras="vm"
[ "$TEST" = 1 ] && extras="vm,test"
# dpkt (--pcap, --packetdrill) is a dependency in pyproject.toml: this pip install brings it.
# matplotlib (--svg) comes with this install as PyPI's wheel, not from Debian: bookworm's
# python3-matplotlib pulls in Tk and, through python3-fonttools, scipy, sympy and the boost
# headers (55 packages with --no-install-recommends); the wheel's eight dependencies (numpy,
# pillow, fonttools, ...) go into the venv only.
say "pip install -e .${extras:+[$extras]}"
quiet "$VENV/bin/pip" install --disable-pip-version-check -e ".${extras:+[$extras]}"
"$VENV/bin/python" -c 'import bcc, click, rich, matplotlib, dpkt' ||
    { echo "setup.sh: the venv cannot import bcc, click, rich, matplotlib and dpkt" >&2; exit 1; }

# The tool on root's PATH, as `sudo trace-halfclose` expects.
ln -sfn "$VENV/bin/trace-halfclose" /usr/local/bin/trace-halfclose
say "ready: $(command -v trace-halfclose)"
