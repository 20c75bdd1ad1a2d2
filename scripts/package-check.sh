#!/usr/bin/env bash
# Builds the Debian package (`cargo deb -p relay`), installs it, checks what it installed (the
# systemd unit with systemd-analyze verify, the configuration with check-config), runs the
# INSTALLED programs end to end on loopback -- a sink, the relay as the service's user with
# the packaged configuration, ten messages through it, /readyz, and systemd's notifications
# (READY=1, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM) -- then removes and
# purges the package and checks that nothing of it is left. .ci/run calls it after the tests.
#
# Needs root (or sudo), dpkg, cargo-deb (`cargo install cargo-deb`), systemd-analyze and
# python3 (the stand-in for systemd's notification socket). Replaces an installed mllp-relay
# package, and purges it at the end, failed or not. Every step says what it does; a failure
# names its step and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
# The service's user and what the package installs (deploy/debian/, relay/Cargo.toml).
USER_NAME=mllp-relay
CONFIG=/etc/mllp-relay/relay.toml
UNIT=/lib/systemd/system/mllp-relay.service

current="start"
step() {
    current="$*"
    printf '\n==> %s\n' "$*"
}
fail() {
    echo "error: $*" >&2
    exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/mllp-package-check.XXXXXX")
pids=()
installed=false
cleanup() {
    local status=$? pid
    trap - EXIT
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((status != 0)); then
        echo >&2
        echo "package check FAILED at step: $current (exit status $status)" >&2
        for log in "$work"/*.out "$work"/*.err; do
            [[ -s $log ]] || continue
            echo "--- $(basename "$log")" >&2
            tail -n 20 "$log" >&2
        done
    fi
    # A failed run must not leave the package (or its user) on the machine either.
    if $installed && dpkg-query -W -f='${Status}' mllp-relay 2>/dev/null | grep -q installed; then
        $SUDO dpkg --purge mllp-relay >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
# SIGINT/SIGTERM end the script through the EXIT trap (with a failure status).
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to $3 seconds for a line of file $1 that starts with $2 and prints it; fails
# (naming the process) when process $4 exits first.
wait_for_line() {
    local file=$1 prefix=$2 seconds=$3 pid=$4 line deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        line=$(grep -m1 -F -- "$prefix" "$file" 2>/dev/null || true)
        if [[ -n $line ]]; then
            printf '%s\n' "$line"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || fail "process $pid exited before printing \"$prefix\""
        sleep 0.1
    done
    fail "no \"$prefix\" line within ${seconds}s in $file"
}

# The status code of GET $2 from the HTTP server at $1 (IP:PORT), through bash's /dev/tcp so
# that no HTTP client is needed.
http_status() {
    local host=${1%:*} port=${1##*:} fd line
    exec {fd}<>"/dev/tcp/$host/$port" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&"$fd"
    IFS= read -r -t 5 line <&"$fd" || line=""
    exec {fd}>&-
    line=${line%$'\r'}
    printf '%s\n' "${line#* }" | cut -d' ' -f1
}

step "tools: dpkg, cargo-deb, systemd-analyze, python3"
for tool in dpkg dpkg-deb systemd-analyze python3 setpriv; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done
cargo deb --version || fail "cargo-deb is missing: cargo install cargo-deb --locked"
if dpkg-query -W -f='${Status}' mllp-relay 2>/dev/null | grep -q installed; then
    echo "note: an installed mllp-relay package is replaced, and purged at the end"
fi

step "build the package: cargo deb -p relay --locked"
# cargo-deb builds both binaries it packages, mllp-loadgen (crate loadgen) included, in one
# cargo build. Its last line on stdout is the path of the .deb.
cargo deb -p relay --locked >"$work/cargo-deb.out"
cat "$work/cargo-deb.out"
deb=$(tail -n 1 "$work/cargo-deb.out")
[[ -f $deb ]] || fail "cargo deb did not name a .deb (last line: $deb)"

step "package contents and control data: $deb"
dpkg-deb --field "$deb" Package Version Architecture Depends Section
dpkg-deb --contents "$deb" | awk '{print $1, $6}'
for path in ./usr/bin/mllp-relay ./usr/bin/mllp-loadgen ./etc/mllp-relay/relay.toml \
    ./lib/systemd/system/mllp-relay.service ./usr/share/doc/mllp-relay/operations.md; do
    dpkg-deb --contents "$deb" | awk '{print $6}' | grep -qxF "$path" || fail "$path is not in the package"
done
dpkg-deb --field "$deb" Depends | grep -q adduser || fail "the package does not depend on adduser"

step "install: dpkg -i"
installed=true
$SUDO dpkg -i "$deb"
[[ -x /usr/bin/mllp-relay && -x /usr/bin/mllp-loadgen ]] || fail "binaries not installed in /usr/bin"
getent passwd "$USER_NAME" || fail "postinst did not create the user $USER_NAME"
getent group "$USER_NAME" || fail "postinst did not create the group $USER_NAME"
echo "conffiles: $(dpkg-query --control-show mllp-relay conffiles)"
dpkg-query --control-show mllp-relay conffiles | grep -qxF "$CONFIG" || fail "$CONFIG is not a conffile"

step "installed files, key lines"
grep -E '^(Type|ExecStart|ExecReload|User|StateDirectory|LogsDirectory|LimitNOFILE|CapabilityBoundingSet|MemoryDenyWriteExecute|ProtectSystem)=' "$UNIT"
grep -E '^(metrics|listen|address|ack_mode) *=' "$CONFIG"

step "systemd-analyze verify $UNIT"
# It exits 0 even when it warns about a key it ignores: any line naming the unit fails.
systemd-analyze verify "$UNIT" >"$work/verify.out" 2>&1 || {
    cat "$work/verify.out"
    fail "systemd-analyze verify failed"
}
cat "$work/verify.out"
if grep -q 'mllp-relay' "$work/verify.out"; then
    fail "systemd-analyze verify warns about the unit"
fi
echo "no warnings"
# The exposure score of the hardening, for information (the unit's comments say what is left
# out and why).
systemd-analyze security --offline=yes "$UNIT" 2>/dev/null | tail -n 1 || true

step "mllp-relay check-config $CONFIG"
/usr/bin/mllp-relay check-config "$CONFIG"

step "mllp-relay --version"
/usr/bin/mllp-relay --version
/usr/bin/mllp-loadgen --version

step "start the installed sink: mllp-loadgen sink --listen 127.0.0.1:0"
/usr/bin/mllp-loadgen sink --listen 127.0.0.1:0 >"$work/sink.out" 2>"$work/sink.err" &
sink_pid=$!
pids+=("$sink_pid")
line=$(wait_for_line "$work/sink.out" "mllp-loadgen sink listening on " 10 "$sink_pid")
echo "$line"
sink=$(awk '{print $5}' <<<"$line")

step "stand in for systemd's notification socket"
# A datagram socket the service's user may write to, each notification appended to a file.
chmod 755 "$work"
python3 - "$work/notify.sock" "$work/notify.log" >"$work/notify.out" 2>"$work/notify.err" <<'EOF' &
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
os.chmod(path, 0o666)
sock.settimeout(120)
print("bound", flush=True)
while True:
    data = sock.recv(4096).decode()
    with open(log, "a") as f:
        f.write(data.replace("\n", " | ") + "\n")
    if data.startswith("STOPPING=1"):
        break
EOF
notify_pid=$!
pids+=("$notify_pid")
wait_for_line "$work/notify.out" "bound" 10 "$notify_pid" >/dev/null

step "start the installed relay as $USER_NAME: mllp-relay --config $CONFIG --listen 127.0.0.1:0 --forward $sink --metrics 127.0.0.1:0"
NOTIFY_SOCKET="$work/notify.sock" setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups \
    --no-new-privs -- /usr/bin/mllp-relay --config "$CONFIG" --listen 127.0.0.1:0 \
    --forward "$sink" --metrics 127.0.0.1:0 >"$work/relay.out" 2>"$work/relay.err" &
relay_pid=$!
pids+=("$relay_pid")
line=$(wait_for_line "$work/relay.out" "mllp-relay listening on " 15 "$relay_pid")
echo "$line"
relay=$(awk '{print $4}' <<<"$line")
line=$(wait_for_line "$work/relay.out" "mllp-relay metrics on " 5 "$relay_pid")
echo "$line"
metrics=$(sed -E 's|.*http://([^/]+)/.*|\1|' <<<"$line")

step "systemd hears READY=1"
line=$(wait_for_line "$work/notify.log" "READY=1" 10 "$relay_pid")
echo "$line"
[[ $line == *"STATUS=listening on $relay"* ]] || fail "READY=1 without the listening status"

step "send 10 messages through the relay: mllp-loadgen send --target $relay --count 10"
timeout 60 /usr/bin/mllp-loadgen send --target "$relay" --count 10 | tee "$work/send.out"
grep -Eq '^acked +10 +AA 10$' "$work/send.out" || fail "the 10 messages did not all get AA"

step "GET /readyz on $metrics"
code=""
for _ in $(seq 50); do
    code=$(http_status "$metrics" /readyz || true)
    [[ $code == 200 ]] && break
    sleep 0.1
done
echo "/readyz: ${code:-no answer}"
[[ $code == 200 ]] || fail "/readyz answered ${code:-nothing}, not 200"

step "SIGHUP: RELOADING=1 then READY=1"
kill -HUP "$relay_pid"
wait_for_line "$work/notify.log" "RELOADING=1" 10 "$relay_pid"
deadline=$((SECONDS + 10))
until (($(grep -c '^READY=1' "$work/notify.log") >= 2)); do
    ((SECONDS < deadline)) || fail "no READY=1 after the reload"
    sleep 0.1
done
grep '^READY=1' "$work/notify.log" | tail -n 1

step "SIGTERM: STOPPING=1, the relay drains and exits 0"
kill -TERM "$relay_pid"
wait_for_line "$work/notify.log" "STOPPING=1" 10 "$notify_pid"
status=0
timeout 45 tail --pid="$relay_pid" -f /dev/null || fail "the relay did not exit within 45 s of SIGTERM"
wait "$relay_pid" || status=$?
((status == 0)) || fail "the relay exited with status $status after SIGTERM"
tail -n 1 "$work/relay.out"
wait "$notify_pid" || fail "the notification stand-in failed"
kill -TERM "$sink_pid"
wait "$sink_pid" || true
tail -n 1 "$work/sink.out"
pids=()

step "remove: dpkg -r mllp-relay"
$SUDO dpkg -r mllp-relay
[[ ! -e /usr/bin/mllp-relay ]] || fail "/usr/bin/mllp-relay is still there after dpkg -r"
[[ ! -e /usr/bin/mllp-loadgen ]] || fail "/usr/bin/mllp-loadgen is still there after dpkg -r"
[[ ! -e $UNIT ]] || fail "$UNIT is still there after dpkg -r"
[[ -e $CONFIG ]] || fail "dpkg -r removed the conffile $CONFIG (only a purge should)"
echo "binaries and unit gone; $CONFIG kept until a purge"

step "purge: dpkg --purge mllp-relay"
$SUDO dpkg --purge mllp-relay
installed=false
[[ ! -e /etc/mllp-relay ]] || fail "/etc/mllp-relay is still there after the purge"
[[ ! -e /var/lib/mllp-relay ]] || fail "/var/lib/mllp-relay is still there after the purge"
if getent passwd "$USER_NAME" >/dev/null; then
    fail "the user $USER_NAME is still there after the purge"
fi
if getent group "$USER_NAME" >/dev/null; then
    fail "the group $USER_NAME is still there after the purge"
fi
if dpkg-query -W mllp-relay >/dev/null 2>&1; then
    fail "dpkg still knows mllp-relay after the purge"
fi
echo "nothing of the package is left"

current="done"
printf '\npackage check passed\n'
