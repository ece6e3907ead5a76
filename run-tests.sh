#!/usr/bin/env bash
# Installs what the tests need (pip packages; Debian's chromium when run as root) and runs them.
# Usage: ./run-tests.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")"

python3 -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The container-layout test runs the server as a non-root user from a fresh venv of Debian's Python.
/usr/bin/python3 -c "import ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "run-tests.sh: please install ${need_apt[*]} (e.g. sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

exec python3 -m pytest "$@"
