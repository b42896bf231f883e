#!/usr/bin/env bash
# A throwaway PostgreSQL server from the Debian package, for the scale-out test and local trials.
#
#   scripts/postgres.sh install                 install the Debian package `postgresql` if missing (apt; root or sudo)
#   scripts/postgres.sh bindir                  print the server's bin directory (exit 1 if not installed)
#   scripts/postgres.sh start DIR PORT PWFILE   initdb DIR (when empty) and start a server on 127.0.0.1:PORT;
#                                               superuser `postgres`, password read from PWFILE
#   scripts/postgres.sh stop DIR [MODE]         stop the server started on DIR (MODE: fast, the default, or
#                                               immediate: no shutdown checkpoint, for a cluster about to be deleted)
#
# initdb and the server refuse to run as root: as root they run as the `postgres` OS user (created by
# the package), so DIR and PWFILE must be readable by it. Nothing listens beyond 127.0.0.1; the unix
# socket lives in DIR. This cluster is for tests: durability is off (fsync, synchronous_commit).
set -euo pipefail

bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] || return 1
    echo "$dir"
}

as_owner() {  # run a server tool as the `postgres` OS user when we are root, else as ourselves
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
install)
    if bindir >/dev/null; then
        exit 0
    fi
    "$(dirname "$0")/apt-install.sh" postgres.sh postgresql
    bindir >/dev/null
    ;;
bindir)
    bindir
    ;;
start)
    [[ $# -eq 4 ]] || { echo "usage: $0 start DIR PORT PWFILE" >&2; exit 64; }
    dir=$2 port=$3 pwfile=$4
    bin=$(bindir) || { echo "postgres.sh: PostgreSQL is not installed (run: $0 install)" >&2; exit 2; }
    if [[ ! -s "$dir/PG_VERSION" ]]; then
        as_owner "$bin/initdb" -D "$dir" -U postgres --pwfile="$pwfile" --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$dir.initdb.log" 2>&1 \
            || { cat "$dir.initdb.log" >&2; exit 1; }
    fi
    as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        >/dev/null || { tail -n 30 "$dir/server.log" >&2 || true; exit 1; }
    ;;
stop)
    [[ $# -eq 2 || $# -eq 3 ]] || { echo "usage: $0 stop DIR [fast|immediate]" >&2; exit 64; }
    mode=${3:-fast}
    [[ $mode == fast || $mode == immediate ]] || { echo "postgres.sh: stop mode must be fast or immediate" >&2; exit 64; }
    bin=$(bindir) || exit 0
    [[ -f "$2/postmaster.pid" ]] || exit 0
    as_owner "$bin/pg_ctl" -D "$2" -m "$mode" -w -t 60 stop >/dev/null
    ;;
*)
    sed -n '2,13p' "$0" >&2
    exit 64
    ;;
esac
