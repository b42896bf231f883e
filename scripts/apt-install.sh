#!/usr/bin/env bash
# Install Debian packages for a test dependency, quietly, as root or through passwordless sudo.
# Shared by scripts/postgres.sh, scripts/chromium.sh and scripts/redis.sh.
#
#   scripts/apt-install.sh <who> <package>...    <who> names the caller in messages
set -euo pipefail

who=${1:?usage: apt-install.sh <who> <package>...}
shift
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "$who: $* not installed and installing needs root (apt-get install $*)" >&2
        exit 2
    fi
fi
if ! command -v apt-get >/dev/null; then
    echo "$who: $* not installed and there is no apt-get to install with" >&2
    exit 2
fi
echo "$who: installing the Debian packages $*" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
