#!/usr/bin/env bash
# Fails when a module of the relay imports one it must not (the rule is written in
# relay/src/lib.rs): imports point along the message path, and nothing imports `worker`.
# Reads `crate::<module>` in code (comments and doc links aside); `super::` stays inside a
# module and is always allowed.
set -euo pipefail
cd "$(dirname "$0")/../relay/src"

declare -A allowed=(
    [route]=""
    [identity]="route"
    [config]="route identity"
    [metrics]="config"
    [health]="config metrics"
    [audit]="config metrics"
    [memory]="config"
    [outbound]="config metrics"
    [custody]="config route metrics outbound"
    [inbound]="config route identity metrics audit outbound custody"
)

status=0
for module in "${!allowed[@]}"; do
    files=$(ls -d "$module.rs" "$module" 2>/dev/null || true)
    [[ -z $files ]] && { echo "check-layers: no module $module in relay/src" >&2; status=1; continue; }
    # file:line:crate::name for every use in code, not in comments.
    while IFS= read -r hit; do
        [[ -z $hit ]] && continue
        used=${hit##*crate::}
        used=${used%%[^a-z_]*}
        [[ $used == "$module" ]] && continue
        if [[ " ${allowed[$module]} " != *" $used "* ]]; then
            echo "relay/src/${hit%%:crate::*}: \`$module\` may not import \`$used\` (allowed: ${allowed[$module]:-nothing of the relay})" >&2
            status=1
        fi
    done < <(grep -rHnoE '^[^/]*\bcrate::[a-z_]+' $files | sed -E 's/:[^:]*\bcrate::/:crate::/')
done
if [[ $status -eq 0 ]]; then
    echo "relay module layers: ok"
fi
exit $status
