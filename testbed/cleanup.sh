#!/usr/bin/env bash
# Stops whatever the test bed left running (Asterisk inside the chroot, SIPp
# phones and carriers) and unmounts anything left mounted inside the chroot.
# Safe to run at any time; CI runs it at the end. Only processes that belong
# to the test bed are touched: Asterisk whose root is the chroot, and SIPp
# started with a scenario from a test-bed instance directory.
set -uo pipefail

ROOT="${RINGLINK_TESTBED_ROOT:-/var/cache/ringlink/testbed/sid}"
INSTANCES_INSIDE=/var/tmp/ringlink-testbed
killed=0

for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    [ "$pid" = "$$" ] && continue
    root="$(readlink "$proc/root" 2>/dev/null)" || continue
    cmdline="$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null)" || continue
    ours=0
    if [ -d "$ROOT" ] && [ "$root" = "$ROOT" ]; then
        ours=1 # Asterisk (or anything else) running inside the chroot
    fi
    case "$cmdline" in
        sipp\ *"$INSTANCES_INSIDE"/slot-*) ours=1 ;;
        asterisk\ *"-C $INSTANCES_INSIDE"/slot-*) ours=1 ;; # host-asterisk mode
    esac
    if [ "$ours" = 1 ]; then
        kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
    fi
done

unmounted=0
if command -v findmnt >/dev/null 2>&1; then
    # Deepest first.
    while read -r target; do
        [ -n "$target" ] || continue
        umount -l "$target" 2>/dev/null && unmounted=$((unmounted + 1))
    done < <(findmnt -rn -o TARGET | awk -v root="$ROOT/" 'index($0, root) == 1' | sort -r)
fi

echo "testbed cleanup: killed ${killed} process(es), unmounted ${unmounted} mount(s)"
