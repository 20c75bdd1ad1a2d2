#!/usr/bin/env bash
# Installs the peer relays that `mllp-bench compare` runs next to mllp-relay, from Debian
# packages: HAProxy, stunnel and nginx with its stream module (on bookworm the stream module is a
# separate dynamic module, libnginx-mod-stream, loaded from /usr/lib/nginx/modules).
#   sudo scripts/install-peers.sh
# Idempotent: installed packages are left alone and the package lists are refreshed only when
# something has to be installed. Debian's maintainer scripts would start nginx (on port 80) and
# HAProxy as system services; the benchmark starts its own instances with its own configuration,
# so a policy-rc.d forbids every service start during the installation, and anything of theirs
# still running afterwards is stopped. Prints the versions found at the end.
set -euo pipefail

packages=(haproxy stunnel4 nginx libnginx-mod-stream)

installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done

if ((${#missing[@]})); then
    if ((EUID != 0)); then
        echo "install-peers: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    # invoke-rc.d asks /usr/sbin/policy-rc.d before starting a service; exit status 101 means
    # "action forbidden". Any policy already in place is put back afterwards.
    policy=/usr/sbin/policy-rc.d
    backup=""
    if [[ -e $policy ]]; then
        backup=$(mktemp "$policy.install-peers.XXXXXX")
        cp -p "$policy" "$backup"
    fi
    restore_policy() {
        if [[ -n $backup ]]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\n# install-peers.sh: no service starts while the peers are installed\nexit 101\n' >"$policy"
    chmod 0755 "$policy"

    echo "install-peers: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

    restore_policy
    trap - EXIT
fi

# Stop any system instance that got started anyway (a previous install without the policy, or a
# service manager that ignores it): the benchmark wants the core and the ports to itself.
for pidfile in /run/nginx.pid /run/haproxy.pid /var/run/nginx.pid /var/run/haproxy.pid; do
    [[ -s $pidfile ]] || continue
    pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        echo "install-peers: stopping the system instance in $pidfile (pid $pid)"
        kill -TERM "$pid"
    fi
done
if command -v ss >/dev/null && ss -Hltn 'sport = :80' | grep -q .; then
    echo "install-peers: warning: something still listens on port 80:" >&2
    ss -Hltnp 'sport = :80' >&2
fi

# What `mllp-bench compare` will find.
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
stunnel_bin=$(command -v stunnel4 || command -v stunnel || echo /usr/bin/stunnel4)
echo "haproxy: $("$haproxy_bin" -v 2>&1 | head -n1)"
echo "stunnel: $("$stunnel_bin" -version 2>&1 | grep -m1 '^stunnel' || true)"
echo "nginx:   $("$nginx_bin" -v 2>&1 | head -n1)"
stream=/usr/lib/nginx/modules/ngx_stream_module.so
if [[ -f $stream ]]; then
    echo "nginx stream module: $stream (dynamic)"
elif "$nginx_bin" -V 2>&1 | grep -q -- '--with-stream\( \|$\)'; then
    echo "nginx stream module: built in"
else
    echo "install-peers: nginx has no stream module" >&2
    exit 1
fi
