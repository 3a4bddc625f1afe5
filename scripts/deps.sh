#!/usr/bin/env bash
# Installs what cnikit needs on Debian 12 (as root), skipping what is there:
#   scripts/deps.sh run    the kernel tools cnikit drives, and Deno
#   scripts/deps.sh test   the same, plus everything the test suite uses
# The package lists are scripts/packages-<what>.txt, one Debian package per line.
set -euo pipefail
cd "$(dirname "$0")"

DENO_VERSION=2.9.6
lists=(packages-run.txt)
[[ ${1:-run} == test ]] && lists+=(packages-test.txt)

mapfile -t packages < <(sed -e 's/#.*//' -e '/^\s*$/d' "${lists[@]}" | awk '{print $1}' | sort -u)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "cnikit: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! deno --version 2>/dev/null | grep -q "^deno ${DENO_VERSION//./\\.} "; then
  echo "cnikit: installing deno ${DENO_VERSION} from the npm registry" >&2
  command -v npm >/dev/null || { echo "cnikit: npm is needed to install deno" >&2; exit 1; }
  npm install -g "deno@${DENO_VERSION}" >/dev/null 2>&1
fi
