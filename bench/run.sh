#!/usr/bin/env bash
# Runs every side-by-side benchmark (postkit against the peer tools) in one go
# and prints their tables. Needs root and the Debian packages of
# scripts/install-deps.sh; each part is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== milter: postkit vs OpenDKIM =="
bench/milter/run.sh
echo
echo "== policy server: postkit policyd vs postfix-policyd-spf-python =="
bench/policyd/run.sh
