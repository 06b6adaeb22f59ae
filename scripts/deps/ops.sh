#!/usr/bin/env bash
# Operations tests (tests/ops.rs): Debian's Prometheus server and promtool,
# systemd-analyze (from `systemd`), adduser and dpkg for installing the
# .deb, lintian to check it, deb-systemd-helper/-invoke (init-system-helpers,
# what the maintainer scripts call), flock (util-linux) and script
# (bsdutils), and cargo-deb (pinned, compiled once into the cache).
source "$(dirname "$0")/../lib.sh"
apt_install prometheus systemd adduser dpkg util-linux bsdutils lintian init-system-helpers
CARGO_DEB_VERSION=3.8.0
DIR="$CACHE/cargo-deb-$CARGO_DEB_VERSION"
if [ -x "$DIR/bin/cargo-deb" ]; then exit 0; fi
log "building cargo-deb $CARGO_DEB_VERSION into $DIR (once)"
# Its own target dir so the workspace's build lock is not held meanwhile.
CARGO_TARGET_DIR="$CACHE/cargo-deb-build" \
    cargo install --locked --quiet --version "$CARGO_DEB_VERSION" --root "$DIR" cargo-deb >&2
rm -rf "$CACHE/cargo-deb-build"
"$DIR/bin/cargo-deb" --version >&2
