#!/usr/bin/env bash
# Builds (once) a Debian sid minbase chroot holding Asterisk 22, the PBX of the
# ringlink test bed. bookworm has no asterisk package; sid does.
#
#   RINGLINK_TESTBED_ROOT   chroot directory (default /var/cache/ringlink/testbed/sid)
#
# Idempotent and cached: a stamp file inside the root records the package set;
# when it matches, the script exits at once. Concurrent callers serialise on a
# lock file, so parallel test processes build it only once. Needs root.
set -euo pipefail

ROOT="${RINGLINK_TESTBED_ROOT:-/var/cache/ringlink/testbed/sid}"
PACKAGES="asterisk asterisk-modules asterisk-core-sounds-en-gsm unixodbc odbc-mariadb"
STAMP_VERSION="1 ${PACKAGES}"
STAMP="${ROOT}/.ringlink-testbed-stamp"

if [ -f "${STAMP}" ] && [ "$(cat "${STAMP}")" = "${STAMP_VERSION}" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "build-chroot: must run as root (debootstrap, chroot)" >&2
    exit 1
fi

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"${SCRIPT_DIR}/install-host-deps.sh" >/dev/null

mkdir -p "$(dirname "${ROOT}")"
exec 9>"${ROOT}.lock"
flock 9
# Another process may have finished the build while we waited for the lock.
if [ -f "${STAMP}" ] && [ "$(cat "${STAMP}")" = "${STAMP_VERSION}" ]; then
    exit 0
fi

# The first non-security URI of the host's deb822 sources is the Debian mirror.
mirror_from_host() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -f "$f" ]; then
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f"
    fi
}
MIRROR="${RINGLINK_TESTBED_MIRROR:-$(mirror_from_host)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

PARTIAL="${ROOT}.partial"
started=$(date +%s)
echo "build-chroot: building ${ROOT} from ${MIRROR} (takes about a minute)" >&2

# Everything runs in a private mount namespace: whatever debootstrap or apt
# mount inside the chroot (/proc, /sys, /dev/pts) disappears with it.
unshare --mount --propagation private -- bash -euo pipefail -c '
    PARTIAL="$1"; MIRROR="$2"; PACKAGES="$3"
    if [ ! -f "${PARTIAL}/.debootstrap-done" ]; then
        rm -rf "${PARTIAL}"
        debootstrap --variant=minbase --include=ca-certificates sid "${PARTIAL}" "${MIRROR}" >&2
        touch "${PARTIAL}/.debootstrap-done"
    fi
    cp /etc/resolv.conf "${PARTIAL}/etc/resolv.conf" 2>/dev/null || true
    mount -t proc proc "${PARTIAL}/proc"
    mount --rbind /dev "${PARTIAL}/dev"
    chroot "${PARTIAL}" apt-get -q -o Acquire::Check-Valid-Until=false update >&2
    # shellcheck disable=SC2086
    chroot "${PARTIAL}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Acquire::Check-Valid-Until=false --no-install-recommends ${PACKAGES} >&2
    chroot "${PARTIAL}" apt-get clean
' build "${PARTIAL}" "${MIRROR}" "${PACKAGES}"

rm -f "${PARTIAL}/.debootstrap-done"
if [ -d "${ROOT}" ]; then
    rm -rf "${ROOT}"
fi
mv "${PARTIAL}" "${ROOT}"
echo "${STAMP_VERSION}" >"${STAMP}"
echo "build-chroot: done in $(( $(date +%s) - started )) s: $(chroot "${ROOT}" asterisk -V)" >&2
