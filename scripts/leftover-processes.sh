#!/usr/bin/env bash
# Fails, naming each one, when a process the tests start is still running: the project's
# binaries and test binaries (anything run from this checkout's target/), the relay, load
# generator and bench by name, the third-party HL7 peers (relay/tests/interop/peers.py) and any
# server a test started in its scratch directory ($TMPDIR/mllp-test-*). .ci/run calls it after
# the tests: every child a test starts must be gone when the test is, failed or not.
# A process killed a moment ago may still be exiting: look again for up to 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
target="$PWD/target/"

leftovers() {
    local pid exe args comm
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        comm=$(cat "$dir/comm" 2>/dev/null) || continue
        exe=$(readlink "$dir/exe" 2>/dev/null) || exe=""
        args=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || args=""
        [[ -z $args ]] && continue # a kernel thread or a zombie: runs nothing
        if [[ $exe == "$target"* || $comm =~ ^mllp-(relay|loadgen|bench)$ ||
              $args == *relay/tests/interop/peers.py* || $args == *"/mllp-test-"* ]]; then
            printf '%s\t%s\n' "$pid" "$args"
        fi
    done
}

deadline=$((SECONDS + 5))
while true; do
    found=$(leftovers)
    [[ -z $found ]] && exit 0
    ((SECONDS < deadline)) || break
    sleep 0.2
done
echo "error: processes started by the tests are still running:" >&2
while IFS=$'\t' read -r pid args; do
    echo "  pid $pid: $args" >&2
done <<<"$found"
exit 1
