#!/usr/bin/env bash
# The whole test suite, with everything it needs set up first (idempotent; run as root on Debian 12):
# host packages (SIPp, debootstrap), the cached Debian sid chroot with a real Asterisk 22, then every test of the
# workspace, including the ones against the real Asterisk. Processes the test bed starts are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

bash testbed/install-host-deps.sh
bash testbed/build-chroot.sh

cleanup() { bash testbed/cleanup.sh >/dev/null 2>&1 || true; }
trap cleanup EXIT

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --no-fail-fast "$@"
