#!/bin/sh
# Installs the peers the spam throughput benchmark measures postkit against
# (Debian 12 packages, --no-install-recommends): SpamAssassin's daemon and
# milter (spamassassin, spamc, spamd, spamass-milter) and rspamd. They are
# benchmark-only: no test needs them, so scripts/install-deps.sh does not
# list them. Idempotent: installs only what is missing, and says what.
# Installing starts no daemon here (policy-rc.d); the benchmark runs its
# own instances in a temporary directory.
set -eu
pkgs="spamassassin spamc spamd spamass-milter rspamd"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "bench/spam: missing$missing; run as root to install them" >&2
	exit 1
fi
echo "bench/spam: installing$missing (benchmark peers)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
