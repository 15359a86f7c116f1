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
# Scenarios: "uncached" gives every request a new client, HELO and sender
# domain (each postkit request makes its DNS queries); "cached" cycles over
# a few, after one untimed pass, so postkit answers from its DNS cache and
# its per-identity SPF result cache. The peer keeps no cache between requests
# and queries DNS every time in both.
#
# The four phases run BENCH_ROUNDS times in turn; the table shows the median
# round of each row (the machine may be busy with other work meanwhile).
#
# Knobs: BENCH_N (postkit requests per phase, 15000), BENCH_PEER_N (peer
# requests per phase, 800), BENCH_CONC (connections / peer processes, 4),
# BENCH_CACHED_DOMAINS (50), BENCH_ROUNDS (3), BENCH_MAX_TIME (20s per phase),
# BENCH_TIMEOUT (300 s for everything).
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
	-n "${BENCH_N:-15000}" -peer-n "${BENCH_PEER_N:-800}" -c "${BENCH_CONC:-4}" \
	-rounds "${BENCH_ROUNDS:-3}" -cached-domains "${BENCH_CACHED_DOMAINS:-50}" -max-time "${BENCH_MAX_TIME:-20s}"
