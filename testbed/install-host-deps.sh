#!/usr/bin/env bash
# Host packages the tests need: debootstrap (builds the Asterisk test bed's sid chroot), sip-tester (SIPp, which
# plays phones and the carrier), the interpreters of the example customization hooks (php-cli, python3), and
# the headless browser the admin UI is tested in (chromium, chromium-driver), systemd-analyze for the
# service unit's check, PostgreSQL (a throwaway server per test of the PostgreSQL store) and mariadb-server
# (the CEL recovery tests start a throwaway MariaDB server).
# Idempotent, no prompts.
set -euo pipefail

need=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v php >/dev/null 2>&1 || need+=(php-cli)
[ -x /usr/bin/python3 ] || need+=(python3)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The service install tests: systemd-analyze verify on the unit (no running systemd needed), dpkg-deb.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
# A throwaway PostgreSQL server (testbed::postgres) for the PostgreSQL store's tests.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# CEL recovery from FreePBX's MySQL table: a throwaway MariaDB server the tests start.
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
# unshare/mount come from util-linux/mount, present on every Debian install.

if [ ${#need[@]} -eq 0 ]; then
    echo "install-host-deps: all present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-host-deps: need root to install: ${need[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null
echo "install-host-deps: installed ${need[*]}"
