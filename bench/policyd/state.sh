#!/bin/sh
# Policy state benchmark: the real `postkit policyd` with greylisting and a
# rate limit, its state in SQLite (one file) vs PostgreSQL 15 (a cluster
# started here, on this machine, loopback TCP), one daemon and two daemons at
# once on the same state (two hosts sharing it). Prints req/s, p50, p99 and
# the PostgreSQL/SQLite ratio of each row (median of BENCH_ROUNDS rounds).
# Target: PostgreSQL sustains at least 5,000 requests/s.
#
# Needs root (the cluster runs as the postgres user) and postgresql-15.
# Knobs: BENCH_STATE_N (requests per phase, 40000), BENCH_CONC (connections
# per daemon, 4), BENCH_ROUNDS (3), BENCH_MAX_TIME (15s per phase),
# BENCH_TIMEOUT (600 s for everything).
set -eu
cd "$(dirname "$0")/../.."
PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/initdb" ] || { echo "policyd state bench: $PGBIN/initdb missing: apt-get install postgresql-15" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "policyd state bench: needs root (the cluster runs as postgres)" >&2; exit 1; }

WORK=$(mktemp -d)
chmod 755 "$WORK"
PGDATA="$WORK/pg"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/postkit" ./cmd/postkit
go build -o "$WORK/policyd-bench" ./bench/policyd

mkdir "$PGDATA" "$WORK/run"
chown postgres:postgres "$PGDATA" "$WORK/run"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
# A production-like cluster: durable commits (fsync on), defaults otherwise.
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
	-o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$WORK/run -c max_connections=100" start >/dev/null
psql -X -q -h "$WORK/run" -p "$PORT" -U postgres -c 'CREATE DATABASE postkit_state' postgres

echo "PostgreSQL: $(psql -X -A -t -h "$WORK/run" -p "$PORT" -U postgres -c 'SHOW server_version' postgres), same host, loopback TCP"
cd "$WORK"
timeout "${BENCH_TIMEOUT:-600}" ./policyd-bench -mode state -postkit "$WORK/postkit" \
	-pg-dsn "postgres://postgres@127.0.0.1:$PORT/postkit_state?sslmode=disable" \
	-n "${BENCH_STATE_N:-40000}" -c "${BENCH_CONC:-4}" -rounds "${BENCH_ROUNDS:-3}" \
	-max-time "${BENCH_MAX_TIME:-15s}" -log-level warn
