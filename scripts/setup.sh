#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: scripts/setup.sh [run|demo|test]
#   run   a venv with the bridge and its runtime dependencies only (no root needed)
#   demo  that, plus Mosquitto and Dovecot for the local demo (root, Debian packages)
#   test  (default) everything the test suite needs: the rig's packages, the test extras,
#         and the Home Assistant the discovery tests run (its own venv, cached in
#         ~/.cache/outlook2mqtt)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-test}"

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: outlook2mqtt needs Python >= 3.11; python3 is $(python3 -V 2>&1)" >&2
    exit 1
fi
need=()
# Debian splits venv support (ensurepip) out of python3
[ -x .venv/bin/python ] || python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "$mode" != run ]; then
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
fi
if [ "$mode" = test ]; then
[ -x /usr/lib/dovecot/submission ] || need+=(dovecot-submissiond)   # SMTP for the send tests
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)   # the broker-cluster test
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # the unit file's tests
command -v git >/dev/null 2>&1 || need+=(git)   # the install tests clone the repository
# ... and make the service's venv from Debian's python3, as docs/setup.md does
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: needs the Debian packages ${need[*]}: run as root, or" \
             "sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# the test install (.installed) includes everything run and demo need (.installed-run)
stamp=.venv/.installed extras='[test]'
if [ "$mode" != test ] && { [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; }; then
    stamp=.venv/.installed-run extras=''
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q -e ".$extras"
    touch "$stamp"
fi

if [ "$mode" = test ]; then
    # ~2 min and ~820 MB the first time; a no-op once cached (rig/homeassistant.py).
    .venv/bin/python -m rig.homeassistant install
fi
