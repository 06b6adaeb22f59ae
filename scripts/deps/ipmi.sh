#!/usr/bin/env bash
# IPMI for the fence tests: OpenIPMI's `ipmi_sim` (one simulated BMC per
# node) and the real `ipmitool` client. See docs/fencing.md, "Tests and the
# simulators".
source "$(dirname "$0")/../lib.sh"
apt_install openipmi ipmitool
command -v ipmi_sim >/dev/null && command -v ipmitool >/dev/null
