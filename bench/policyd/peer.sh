#!/bin/sh
# peer.sh — run postfix-policyd-spf-python (Debian's /usr/bin/policyd-spf,
# which reads policy requests on stdin) on the same SPF requests as
# `go run ./bench/policyd`, and print its throughput.
#
# The peer uses the system resolver, so it runs in a network namespace whose
# /etc/netns/NAME/resolv.conf points at the bench zone served inside it.
# Needs root. Usage, from the module root:
#   sh bench/policyd/peer.sh            # N=500 requests, one domain each
#   N=2000 DOMAINS=50 sh bench/policyd/peer.sh
set -eu
N=${N:-500}
DOMAINS=${DOMAINS:-$N}
NS=postkit-bench-$$
WORK=$(mktemp -d)
DNSPID=

cleanup() {
	[ -n "$DNSPID" ] && kill "$DNSPID" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "/etc/netns/$NS" "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/bench" ./bench/policyd
"$WORK/bench" -mode requests -n "$N" -domains "$DOMAINS" >"$WORK/requests"

ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
echo "nameserver 127.0.0.1" >"/etc/netns/$NS/resolv.conf"
ip netns exec "$NS" "$WORK/bench" -mode dns -listen 127.0.0.1:53 -domains "$DOMAINS" 2>"$WORK/dns.log" &
DNSPID=$!
# Wait until the zone is served.
for _ in $(seq 50); do
	grep -q serving "$WORK/dns.log" 2>/dev/null && break
	sleep 0.2
done

start=$(date +%s.%N)
ip netns exec "$NS" /usr/bin/python3 /usr/bin/policyd-spf <"$WORK/requests" >"$WORK/replies" 2>"$WORK/peer.log" || true
end=$(date +%s.%N)

answered=$(grep -c '^action=' "$WORK/replies" || true)
echo "postfix-policyd-spf-python: $answered/$N requests answered, $DOMAINS domains"
awk -v n="$answered" -v s="$start" -v e="$end" 'BEGIN { printf "  %.1f req/s  (%.3f s, %.2f ms/request)\n", n/(e-s), e-s, 1000*(e-s)/n }'
grep '^action=' "$WORK/replies" | sed 's/ (.*//' | sort | uniq -c | sort -rn | head -5
if [ "$answered" -ne "$N" ]; then
	echo "peer errors:" >&2
	tail -5 "$WORK/peer.log" >&2
fi
