#!/bin/sh
# Milter benchmarks, one run: postkit (the real `postkit milter`, pure Go and
# built with -tags openssl) vs OpenDKIM, milter only (go-milter client) and
# through Postfix (smtp-source → Postfix → milter → smtp-sink), CPU per
# message, and the 30 MB memory check. Prints a Markdown summary at the end.
# Needs root, postfix, opendkim, openssl; -tags openssl needs libssl-dev.
# Knobs: BENCH_MESSAGES (2000), BENCH_CONNS (8), BENCH_SIZE (5120),
# BENCH_RUN (test regexp), BENCH_TARGETS (regexp of full-path target names),
# BENCH_ROUNDS (2), BENCH_NEW_SESSIONS=1 (one SMTP session per message in the
# full path), BENCH_STRICT=1 (a missed target fails the run);
# POSTKIT_BENCH_BIN_BASE and POSTKIT_BENCH_BIN_OPENSSL_BASE add full-path
# targets run by other builds (A/B in the same rounds).
set -eu
cd "$(dirname "$0")/../.."
bin=$(mktemp -d /tmp/postkit-bench-bin.XXXXXX)
trap 'rm -rf "$bin"' EXIT
# Each build is exactly what its label says: GOFLAGS from the environment
# (the Makefile exports -tags=openssl) must not turn the pure Go build into
# a libcrypto one, so its -tags settings are dropped for both builds. The
# benchmark reads each binary's tags back (go version -m) and refuses a
# binary built otherwise than its label.
GOFLAGS=$(printf '%s\n' "${GOFLAGS:-}" | tr ' ' '\n' | grep -v -E '^--?tags=' | tr '\n' ' ' | sed 's/ *$//')
export GOFLAGS
go build -o "$bin/postkit" ./cmd/postkit
if go build -tags openssl -o "$bin/postkit-openssl" ./cmd/postkit 2>"$bin/openssl.err"; then
	export POSTKIT_BENCH_BIN_OPENSSL="$bin/postkit-openssl"
else
	echo "run.sh: -tags openssl build failed (apt-get install libssl-dev); measuring pure Go only:" >&2
	cat "$bin/openssl.err" >&2
fi
export POSTKIT_BENCH_BIN="$bin/postkit"
# Bounded: the whole run takes 3 to 5 minutes on 2 cores.
exec timeout 600 go test -tags bench -count=1 -timeout 9m -run "${BENCH_RUN:-.}" -v ./bench/milter/
