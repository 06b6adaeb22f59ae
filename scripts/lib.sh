# Shared helpers for novaha's install scripts. Source it; do not run it.
# Everything lands in the ignored cache folder ($NOVAHA_CACHE, default
# <repo>/.cache), keyed on versions; nothing is installed system-wide except
# Debian packages through apt-get.

set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${NOVAHA_CACHE:-$REPO/.cache}"
mkdir -p "$CACHE"

log() { printf '[deps] %s\n' "$*" >&2; }

# apt_install PKG...: installs the Debian packages that are missing, running
# `apt-get update` at most once per run.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    # One `apt-get update` per test-deps run (it exports NOVAHA_APT_MARK).
    if [ ! -e "${NOVAHA_APT_MARK:-/nonexistent}" ]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
        if [ -n "${NOVAHA_APT_MARK:-}" ]; then touch "$NOVAHA_APT_MARK"; fi
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# venv DIR REQUIREMENT...: a Python venv at DIR with the given pip
# requirements; rebuilt when the requirement list changes.
venv() {
    local dir="$1"; shift
    local want="$*"
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    log "python venv $dir: $want"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@" >&2
    printf '%s' "$want" > "$dir/.requirements"
}
