#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite (the fleet issue's tests): Debian's `postgresql` package (installed
# when missing), a fresh cluster in a temporary directory, listening on a Unix socket in that directory and on
# a free loopback port, trust authentication for its one local user, fsync off (the data is discarded).
#
#   scripts/setup-postgres.sh start     # prints PHAROS_TEST_DATABASE_URL=… and PHAROS_TEST_PGDIR=… lines;
#                                       # the last line is the URL
#   scripts/setup-postgres.sh stop DIR  # stops the cluster started in DIR and deletes DIR
#   scripts/setup-postgres.sh pause DIR # stops the server, keeping the cluster (an outage, for tests)
#   scripts/setup-postgres.sh resume DIR # starts it again on the same port
#   scripts/setup-postgres.sh install   # only installs the package when missing
#
# Run as root (CI), the cluster belongs to the `postgres` user, as PostgreSQL refuses to run as root.
set -euo pipefail

find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
        fi
    done | sort -V | tail -n 1
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install() {
    local bin
    bin="$(find_bin)"
    if [ -z "$bin" ]; then
        echo "setup-postgres: installing Debian's postgresql package" >&2
        if [ "$(id -u)" != 0 ]; then
            echo "setup-postgres: PostgreSQL is not installed and this is not root: apt-get install postgresql" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    fi
}

start() {
    install
    local bin dir port
    bin="$(find_bin)"
    dir="$(mktemp -d /tmp/pharos-pg.XXXXXX)"
    chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
    fi
    # A free port: ask the kernel for one, then hand it to PostgreSQL.
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$dir/data" -U pharos --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    # In the cluster's own config, so `resume` starts it again the same way.
    printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $port" "unix_socket_directories = '$dir'" \
        "fsync = off" "synchronous_commit = off" "full_page_writes = off" "max_connections = 200" |
        as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >&2
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U pharos pharos
    echo "setup-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, cluster in $dir" >&2
    echo "PHAROS_TEST_PGDIR=$dir"
    echo "PHAROS_TEST_DATABASE_URL=postgres://pharos@127.0.0.1:$port/pharos"
    echo "postgres://pharos@127.0.0.1:$port/pharos"
}

stop() {
    local dir="${1:?usage: setup-postgres.sh stop DIR}" bin
    bin="$(find_bin)"
    case "$dir" in /tmp/pharos-pg.*) ;; *) echo "setup-postgres: not a cluster of this script: $dir" >&2; exit 1 ;; esac
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$dir"
}

cluster_dir() {
    local dir="${1:?a cluster directory}"
    case "$dir" in /tmp/pharos-pg.*) ;; *) echo "setup-postgres: not a cluster of this script: $dir" >&2; exit 1 ;; esac
    echo "$dir"
}

pause() {
    local dir
    dir="$(cluster_dir "${1:-}")"
    as_owner "$(find_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >&2
}

resume() {
    local dir
    dir="$(cluster_dir "${1:-}")"
    as_owner "$(find_bin)/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >&2
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop "${2:-}" ;;
    pause) pause "${2:-}" ;;
    resume) resume "${2:-}" ;;
    *) echo "usage: setup-postgres.sh install | start | stop DIR | pause DIR | resume DIR" >&2; exit 2 ;;
esac
