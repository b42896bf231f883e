#!/usr/bin/env bash
# Debian's Redis server, the Celery broker of the distributed-executor test
# (teleprompt_assets_tests/test_celery.py), which starts its own throwaway server on 127.0.0.1.
#
#   scripts/redis.sh install   install the Debian package `redis-server` if missing (apt, root or sudo)
#   scripts/redis.sh path      print the server's path (exit 1 if not installed)
set -euo pipefail

REDIS=${TELEPROMPT_REDIS_SERVER:-/usr/bin/redis-server}

case "${1:-}" in
install)
    [[ -x "$REDIS" ]] && exit 0
    "$(dirname "$0")/apt-install.sh" redis.sh redis-server
    [[ -x "$REDIS" ]] || { echo "redis.sh: apt-get installed redis-server but $REDIS is missing" >&2; exit 1; }
    ;;
path)
    [[ -x "$REDIS" ]] || exit 1
    echo "$REDIS"
    ;;
*)
    sed -n '2,6p' "$0" >&2
    exit 64
    ;;
esac
