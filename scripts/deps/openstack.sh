#!/usr/bin/env bash
# A real OpenStack (release 2026.2: keystone, placement, glance, nova with the
# fake virt driver) for the end-to-end suite in tests/openstack/: the Debian
# services it needs (RabbitMQ, MariaDB, the IPMI simulator) and one Python
# venv built from the exact pins in tests/openstack/requirements.txt, cached
# under $CACHE keyed on a hash of the pins and the interpreter's version.
# uv (from PyPI) installs the 165 pinned packages in ~40 s instead of ~2 min.
source "$(dirname "$0")/../lib.sh"
apt_install rabbitmq-server mariadb-server python3 python3-venv openipmi ipmitool \
    curl procps util-linux

PY=/usr/bin/python3
PINS="$REPO/tests/openstack/requirements.txt"
KEY="$( { cat "$PINS"; "$PY" --version; } | sha256sum | cut -c1-16)"
VENV="$CACHE/openstack-venv-$KEY"
if [ -x "$VENV/bin/python" ] && [ -e "$VENV/.complete" ]; then
    exit 0
fi

# uv itself, in a small bootstrap venv of its own.
UV_VERSION=0.13.9
UVV="$CACHE/uv-$UV_VERSION"
if [ ! -x "$UVV/bin/uv" ]; then
    venv "$UVV" "uv==$UV_VERSION"
fi

log "building the OpenStack venv $VENV (165 pinned packages)"
# Built at its final path (console scripts' shebangs name it); only the
# `.complete` mark written last makes it count, so an interrupted install
# is rebuilt from scratch next time.
rm -rf "$VENV"
export UV_CACHE_DIR="$CACHE/uv-cache"
"$UVV/bin/uv" venv -q --python "$PY" "$VENV" >&2
"$UVV/bin/uv" pip install -q --python "$VENV/bin/python" -r "$PINS" >&2
"$VENV/bin/python" -c 'import nova, keystone, placement, glance, gunicorn' >&2
touch "$VENV/.complete"
# Older venvs (other pins) are dead weight: remove them.
for old in "$CACHE"/openstack-venv-*; do
    [ "$old" = "$VENV" ] || rm -rf "$old"
done
log "OpenStack venv ready: $VENV"
