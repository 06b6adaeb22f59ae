#!/usr/bin/env bash
# libvirt for the fence tests: a private unprivileged `libvirtd --listen`
# (started per test by the testkit) serving the `test` driver over
# `test+tcp://`, and the `virsh` client. See docs/fencing.md, "Tests and the
# simulators".
source "$(dirname "$0")/../lib.sh"
apt_install libvirt-daemon libvirt-clients
command -v virsh >/dev/null && { command -v libvirtd >/dev/null || [ -x /usr/sbin/libvirtd ]; }
