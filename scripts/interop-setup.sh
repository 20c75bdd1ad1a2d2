#!/usr/bin/env bash
# Installs the third-party HL7 peers the interop tests drive (python-hl7 and hl7apy, from PyPI)
# into target/interop-venv, and prints the interpreter's path. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import hl7, hl7apy' 2>/dev/null \
    || "$venv/bin/pip" install --quiet 'hl7==0.4.5' 'hl7apy==1.3.5'
echo "$PWD/$venv/bin/python"
