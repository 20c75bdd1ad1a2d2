#!/usr/bin/env bash
# Installs the third-party HL7 peers the interop tests drive (python-hl7, hl7apy and txHL7 on
# Twisted, from PyPI) into target/interop-venv, and prints the interpreter's path (the only
# thing it prints on stdout). Idempotent: it installs again only when the pins below change.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/interop-venv
pins=(
    'hl7==0.4.5' 'hl7apy==1.3.5'
    # txHL7 (last release 2016) on a current Twisted; Python >= 3.11 (zope.interface 8.7).
    'txHL7==0.5.0' 'Twisted==26.10.0'
    # Their own dependencies, pinned too so that CI installs exactly what was tested.
    'six==1.17.0' 'zope.interface==8.7' 'attrs==26.1.0' 'Automat==25.4.16'
    'constantly==23.10.4' 'hyperlink==21.0.0' 'idna==3.20' 'incremental==24.11.0'
    'packaging==26.3' 'typing_extensions==4.16.0'
)
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
stamp=$venv/interop-pins
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ] \
    || ! "$venv/bin/python" -c 'import hl7, hl7apy, txHL7.mllp, twisted.internet' 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
    echo "${pins[*]}" >"$stamp"
fi
echo "$PWD/$venv/bin/python"
