#!/bin/sh
# Milter benchmarks: postkit (unix, TCP) vs OpenDKIM, milter only and through
# Postfix, plus the 30 MB memory check. Needs root, postfix, opendkim, openssl.
# Knobs: BENCH_MESSAGES (2000), BENCH_CONNS (8), BENCH_SIZE (5120), BENCH_RUN (test regexp).
set -eu
cd "$(dirname "$0")/../.."
exec go test -tags bench -count=1 -timeout 30m -run "${BENCH_RUN:-.}" -v ./bench/milter/
