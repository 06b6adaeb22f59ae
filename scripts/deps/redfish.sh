#!/usr/bin/env bash
# The Redfish emulator the fence tests talk to: sushy-tools (PyPI, pinned) in
# a venv under the cache, plus bcrypt (same venv) to write the htpasswd file
# its Basic auth reads, and openssl for the HTTPS test's certificates. See
# docs/fencing.md, "Tests and the simulators".
source "$(dirname "$0")/../lib.sh"
apt_install python3-venv openssl
SUSHY=2.2.0
BCRYPT=4.2.1
venv "$CACHE/sushy-$SUSHY" "sushy-tools==$SUSHY" "bcrypt==$BCRYPT"
"$CACHE/sushy-$SUSHY/bin/python" -c 'import sushy_tools, bcrypt' >&2
