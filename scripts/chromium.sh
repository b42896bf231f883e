#!/usr/bin/env bash
# Debian's Chromium, for the browser test (teleprompt_assets_tests/test_ui_browser.py), which drives it
# through Playwright's Python package. Playwright's own browser download (`playwright install`) is
# never used: the test points Playwright at this executable.
#
#   scripts/chromium.sh install   install the Debian package `chromium` if missing, with `fonts-liberation` (its
#                                 recommended fonts: screenshots show text on a bare machine) and
#                                 `fonts-noto-color-emoji` (the DeltaOne badges); apt, root or sudo
#   scripts/chromium.sh path      print the executable's path (exit 1 if not installed)
set -euo pipefail

CHROMIUM=${TELEPROMPT_CHROMIUM:-/usr/bin/chromium}

installed() {
    [[ -x "$CHROMIUM" ]]
}

case "${1:-}" in
install)
    if installed && fc-list 2>/dev/null | grep -qi "color emoji"; then
        exit 0
    fi
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "chromium.sh: Chromium is not installed and installing it needs root (apt-get install chromium)" >&2
            exit 2
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "chromium.sh: Chromium is not installed and there is no apt-get to install it with" >&2
        exit 2
    fi
    echo "chromium.sh: installing the Debian packages chromium, fonts-liberation and fonts-noto-color-emoji" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-noto-color-emoji >/dev/null
    installed || { echo "chromium.sh: apt-get installed chromium but $CHROMIUM is missing" >&2; exit 1; }
    ;;
path)
    installed || exit 1
    echo "$CHROMIUM"
    ;;
*)
    sed -n '2,8p' "$0" >&2
    exit 64
    ;;
esac
