#!/usr/bin/env bash
# A real SMTP server for the notify tests: Debian's python3-aiosmtpd (for
# /usr/bin/python3; `python3` on PATH may be another interpreter) and openssl
# for the throw-away STARTTLS certificates (see crates/testkit/src/smtp.rs).
source "$(dirname "$0")/../lib.sh"
apt_install python3 python3-aiosmtpd openssl
/usr/bin/python3 -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)' >&2
openssl version >&2
