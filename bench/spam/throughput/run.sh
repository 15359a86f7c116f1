#!/bin/sh
# Spam filter benchmarks, one run: postkit's milter with its spam filter vs
# spamass-milter + spamd and vs rspamd's milter, on the same generated
# messages: milter only (go-milter's client), the full path (SMTP client →
# Postfix → filter → smtp-sink), CPU per message of each filter's process
# tree, resident memory with a trained Bayes store, and the 30 MB memory
# check. Prints a Markdown summary at the end.
#
# Needs root and Postfix (scripts/install-deps.sh); the peers are
# benchmark-only and installed here by `scripts/install-deps.sh bench`
# (spamassassin, spamc, spamd, spamass-milter, rspamd) when missing.
# Knobs: BENCH_MESSAGES (2000; postkit, rspamd), BENCH_SA_MESSAGES (200;
# SpamAssassin scores ~9 msg/s here), BENCH_CONNS (8), BENCH_SIZE (5120),
# BENCH_TRAIN (1000 spam and 1000 ham for postkit's store), BENCH_SA_TRAIN
# (200 each, SpamAssassin's minimum), BENCH_RUN (test regexp),
# BENCH_TARGETS (regexp of filter names), BENCH_STRICT=1 (a missed target
# fails the run).
set -eu
cd "$(dirname "$0")/../../.."
scripts/install-deps.sh bench
bin=$(mktemp -d /tmp/postkit-bench-spam-bin.XXXXXX)
trap 'rm -rf "$bin"' EXIT
# The pure Go build, labelled as built (GOFLAGS from the environment may
# add -tags; they are dropped, and the benchmark prints the binary's label).
GOFLAGS=$(printf '%s\n' "${GOFLAGS:-}" | tr ' ' '\n' | grep -v -E '^--?tags=' | tr '\n' ' ' | sed 's/ *$//')
export GOFLAGS
go build -o "$bin/postkit" ./cmd/postkit
export POSTKIT_BENCH_BIN="$bin/postkit"
# Bounded: about 5 minutes on 2 cores with the defaults.
exec timeout 900 go test -tags bench -count=1 -timeout 14m -run "${BENCH_RUN:-.}" -v ./bench/spam/throughput/
