#!/bin/sh
# Policy server benchmark: the real `postkit policyd` daemon against
# postfix-policyd-spf-python (Debian's /usr/bin/policyd-spf), in one run, on
# the same SPF requests, with the same DNS server, and prints the tables:
# cold (every request distinct) and warm (repeated) req/s, p50, p99, DNS
# queries per request, ratio to the peer; then the daemon's RSS after
# 200,000 distinct requests (target: under 48 MB).
#
# The daemon is built here as `make` builds it (GOFLAGS from the environment
# apply); the tables name each build as read back from the binary
# (go version -m): Go version, build tags, source revision.
#
# The peer resolves through the system resolver, so everything runs in a
# network namespace whose /etc/netns/NAME/resolv.conf points at the bench's
# DNS server on 127.0.0.1:53 inside it. Needs root, iproute2 and
# postfix-policyd-spf-python. Each phase stops after BENCH_MAX_TIME (the
# memory phase after BENCH_RSS_MAX_TIME); the whole run after BENCH_TIMEOUT
# seconds.
#
# The phases run BENCH_ROUNDS times in turn; the table shows the median
# round of each row (the machine may be busy with other work meanwhile).
#
# Knobs: BENCH_N (postkit requests per phase, 15000), BENCH_PEER_N (peer
# requests per phase, 800), BENCH_CONC (connections / peer processes, 4),
# BENCH_WARM_DOMAINS (50), BENCH_ROUNDS (3), BENCH_MAX_TIME (20s per phase),
# BENCH_RSS_REQUESTS (200000), BENCH_RSS_MAX_TIME (150s), BENCH_LOG_LEVEL
# (the daemon's, warn; info is production's line per request),
# BENCH_TIMEOUT (600 s for everything), BENCH_STRICT=1 (a missed memory
# target fails the run); POSTKIT_BENCH_POLICYD_BASE (an older
# postkit binary measured in the same rounds: A/B). POSTKIT_CPUPROFILE and
# POSTKIT_MEMPROFILE (%p = pid) make each daemon write pprof profiles when
# it stops.
set -eu
cd "$(dirname "$0")/../.."

for tool in ip /usr/bin/policyd-spf; do
	command -v "$tool" >/dev/null 2>&1 || { echo "policyd bench: $tool missing: apt-get install iproute2 postfix-policyd-spf-python" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "policyd bench: needs root (network namespace)" >&2; exit 1; }

NS=postkit-policyd-bench-$$
WORK=$(mktemp -d)
cleanup() {
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "/etc/netns/$NS" "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/postkit" ./cmd/postkit
go build -o "$WORK/policyd-bench" ./bench/policyd

ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
printf 'nameserver 127.0.0.1\noptions timeout:2 attempts:2\n' >"/etc/netns/$NS/resolv.conf"

echo "postkit policyd vs postfix-policyd-spf-python: SPF checks of HELO and MAIL FROM (include, mx, a)"
echo "peer: $(dpkg-query -W -f '${Package} ${Version}' postfix-policyd-spf-python 2>/dev/null || echo unknown version)"
echo "cold: every request names new domains; warm: ${BENCH_WARM_DOMAINS:-50} (client, HELO, sender domain) sets repeated, postkit warmed up"
set -- -postkit "$WORK/postkit"
if [ -n "${POSTKIT_BENCH_POLICYD_BASE:-}" ]; then
	set -- "$@" -postkit-base "$POSTKIT_BENCH_POLICYD_BASE"
fi
if [ "${BENCH_STRICT:-}" = 1 ]; then
	set -- "$@" -strict
fi
timeout "${BENCH_TIMEOUT:-600}" ip netns exec "$NS" "$WORK/policyd-bench" -mode compare "$@" \
	-dns-listen 127.0.0.1:53 \
	-n "${BENCH_N:-15000}" -peer-n "${BENCH_PEER_N:-800}" -c "${BENCH_CONC:-4}" \
	-rounds "${BENCH_ROUNDS:-3}" -warm-domains "${BENCH_WARM_DOMAINS:-50}" -max-time "${BENCH_MAX_TIME:-20s}" \
	-rss-requests "${BENCH_RSS_REQUESTS:-200000}" -rss-max-time "${BENCH_RSS_MAX_TIME:-150s}" \
	-log-level "${BENCH_LOG_LEVEL:-warn}"
