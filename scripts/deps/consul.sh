#!/usr/bin/env bash
# A real Consul (Debian bullseye's 1.8.7 package), unpacked into the cache
# without touching the system's apt state: Debian bookworm has no consul
# package (see docs/testing.md, "Scripts").
source "$(dirname "$0")/../lib.sh"
# openssl makes the certificates of the TLS agent (testkit::consul).
apt_install openssl
VERSION=1.8.7
DIR="$CACHE/consul-$VERSION"
if [ -x "$DIR/usr/bin/consul" ]; then exit 0; fi
log "fetching consul $VERSION from Debian bullseye"
APT="$CACHE/apt-bullseye"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DIR"
echo "deb http://deb.debian.org/debian bullseye main" > "$APT/sources.list"
opts=(-o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts=-
      -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache"
      -o APT::Get::List-Cleanup=0)
apt-get "${opts[@]}" update -qq >&2
tmp="$(mktemp -d)"
(cd "$tmp" && apt-get "${opts[@]}" download "consul=${VERSION}*" >&2)
dpkg-deb -x "$tmp"/consul_*.deb "$DIR"
rm -rf "$tmp"
"$DIR/usr/bin/consul" version | head -1 >&2
