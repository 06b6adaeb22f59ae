#!/usr/bin/env bash
# The TLS test of novaha-openstack (crates/openstack/tests/tls.rs): openssl
# makes a throw-away CA-less self-signed certificate and /usr/bin/python3's
# ssl module terminates TLS in front of novaha-sim.
source "$(dirname "$0")/../lib.sh"
apt_install python3 openssl
/usr/bin/python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)' >&2
openssl version >&2
