#!/usr/bin/env bash
# The real OpenStack Python clients (python-novaclient, keystoneauth1,
# openstacksdk from PyPI) in a venv under the cache, used by novaha-sim's
# fidelity test (crates/sim/tests/fidelity.rs) to check that the simulator
# speaks what real clients expect. The venv dir is keyed on the pins.
source "$(dirname "$0")/../lib.sh"
apt_install python3-venv
NOVACLIENT=18.13.1
KEYSTONEAUTH=5.18.1
OPENSTACKSDK=4.22.0
DIR="$CACHE/python-clients-nc$NOVACLIENT-ka$KEYSTONEAUTH-sdk$OPENSTACKSDK"
venv "$DIR" "python-novaclient==$NOVACLIENT" "keystoneauth1==$KEYSTONEAUTH" "openstacksdk==$OPENSTACKSDK"
# A stable name for the tests to find, pointing at the current pins.
ln -sfn "$(basename "$DIR")" "$CACHE/python-clients"
"$DIR/bin/python" -c 'import novaclient, keystoneauth1, openstack' >&2
