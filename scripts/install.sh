#!/usr/bin/env bash
# Installs ringlink as a systemd service from a build of this checkout, without a Debian package:
#
#   cargo build --release -p ringlink
#   sudo bash scripts/install.sh
#
# Puts the binary in /usr/local/bin, the unit in /etc/systemd/system/ringlink.service, creates the ringlink user
# (in the asterisk group when there is one, to read recordings) and /etc/ringlink/ringlink.toml from
# `ringlink config default --service` unless the file exists (an existing config is never touched). Starts nothing:
# edit the config, `ringlink check -c /etc/ringlink/ringlink.toml`, then `systemctl enable --now ringlink`.
# Running it again upgrades the binary and the unit in place. The Debian package (cargo deb -p ringlink) does the
# same with /usr/bin.
#
#   --binary FILE   the ringlink binary to install (default target/release/ringlink)
#   --root DIR      install into another root directory (an image being built, or a test)
set -euo pipefail
cd "$(dirname "$0")/.."

binary=target/release/ringlink
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --root) root="$(cd "$2" && pwd)"; shift 2 ;;
        *) echo "install.sh: unknown argument $1 (see the comment at the top of the script)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run it as root (it creates a system user and writes to /usr/local/bin and /etc)" >&2
    exit 1
fi
if [ ! -x "$binary" ]; then
    echo "install.sh: no binary at $binary: run 'cargo build --release -p ringlink' first" >&2
    exit 1
fi

upgrade=""
[ -e "$root/usr/local/bin/ringlink" ] && upgrade="installed"
install -D -m 0755 "$binary" "$root/usr/local/bin/ringlink"
mkdir -p "$root/etc/systemd/system"
sed 's|^ExecStart=/usr/bin/ringlink |ExecStart=/usr/local/bin/ringlink |' crates/ringlink/debian/ringlink.service \
    > "$root/etc/systemd/system/ringlink.service"
chmod 0644 "$root/etc/systemd/system/ringlink.service"
mkdir -p "$root/etc/ringlink"
if [ ! -e "$root/etc/ringlink/ringlink.toml" ]; then
    "$binary" config default --service > "$root/etc/ringlink/ringlink.toml.new"
    mv "$root/etc/ringlink/ringlink.toml.new" "$root/etc/ringlink/ringlink.toml"
else
    echo "install.sh: keeping the existing /etc/ringlink/ringlink.toml"
fi
# The user, the state directory, the config's permissions and systemd's reload: the Debian package's own step.
DPKG_ROOT="$root" sh crates/ringlink/debian/postinst configure "$upgrade"
echo "install.sh: installed /usr/local/bin/ringlink and ringlink.service${root:+ under $root}"
