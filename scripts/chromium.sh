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
    "$(dirname "$0")/apt-install.sh" chromium.sh chromium fonts-liberation fonts-noto-color-emoji
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
