#!/bin/sh
# Policy server benchmark: postkit policyd against postfix-policyd-spf-python
# (Debian's /usr/bin/policyd-spf), in one run, on the same SPF requests, with
# the same DNS server, and prints one table (req/s, p50, p99, DNS queries per
# request, ratio to the peer).
#
# The peer resolves through the system resolver, so everything runs in a
# network namespace whose /etc/netns/NAME/resolv.conf points at the bench's
# DNS server on 127.0.0.1:53 inside it. Needs root, iproute2 and
# postfix-policyd-spf-python. Each phase stops after BENCH_MAX_TIME; the
# whole run after BENCH_TIMEOUT seconds.
#
# Knobs: BENCH_N (postkit requests per scenario, 20000), BENCH_PEER_N (peer
# requests per scenario, 1000), BENCH_CONC (connections / peer processes, 4),
# BENCH_CACHED_DOMAINS (50), BENCH_MAX_TIME (20s), BENCH_TIMEOUT (300).
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

go build -o "$WORK/policyd-bench" ./bench/policyd

ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
printf 'nameserver 127.0.0.1\noptions timeout:2 attempts:2\n' >"/etc/netns/$NS/resolv.conf"

echo "postkit policyd vs postfix-policyd-spf-python: SPF checks of HELO and MAIL FROM (include, mx, a)"
echo "uncached: every request names new domains; cached: ${BENCH_CACHED_DOMAINS:-50} domains, postkit warmed up"
timeout "${BENCH_TIMEOUT:-300}" ip netns exec "$NS" "$WORK/policyd-bench" -mode compare \
	-dns-listen 127.0.0.1:53 \
	-n "${BENCH_N:-20000}" -peer-n "${BENCH_PEER_N:-1000}" -c "${BENCH_CONC:-4}" \
	-cached-domains "${BENCH_CACHED_DOMAINS:-50}" -max-time "${BENCH_MAX_TIME:-20s}"
