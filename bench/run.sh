#!/usr/bin/env bash
# Runs every side-by-side benchmark (postkit's daemons against the peer
# tools) in one go and prints their tables. Needs root and the Debian
# packages of scripts/install-deps.sh; each part is bounded in time.
#
# Each part labels its postkit builds by what they are (read back from the
# binaries with go version -m), whatever GOFLAGS the caller exports: the
# milter part builds pure Go and -tags openssl itself; the policy part
# measures the build the caller's GOFLAGS give (make: -tags openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== milter: postkit milter vs OpenDKIM =="
bench/milter/run.sh
echo
echo "== policy server: postkit policyd vs postfix-policyd-spf-python =="
bench/policyd/run.sh
echo
echo "== policy state: greylisting and rate limits on SQLite vs PostgreSQL, one host and two =="
bench/policyd/state.sh
echo
echo "== spam: postkit spam vs SpamAssassin 4, accuracy on the SpamAssassin public corpus =="
bench/spam/run.sh
echo
echo "== spam filters: postkit spam vs spamass-milter + spamd vs rspamd, throughput =="
bench/spam/throughput/run.sh
