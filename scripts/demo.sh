#!/bin/sh
# make demo: run the whole postkit stack (Postfix + Dovecot + postkit) in a
# sandbox under ./demo/, on 127.0.0.1 only, send a message through it and show
# it delivered. Debian 12, as root.
#
#   DEMO_DETACH=1     leave the stack running in the background and exit 0
#                     (also the default when stdout is not a terminal, e.g. CI)
#   DEMO_NO_INSTALL=1 never run apt-get; fail if a package is missing
#   DEMO_ROOT=DIR     sandbox directory (default ./demo)
#
# Stop it with Ctrl-C (foreground) or `make demo-stop` / scripts/demo-stop.sh.
set -eu

cd "$(dirname "$0")/.."
top=$(pwd)
root=${DEMO_ROOT:-$top/demo}
case $root in /*) ;; *) root=$top/$root ;; esac

say() { printf '%s\n' "demo: $*"; }
die() { printf '%s\n' "demo: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
	die "needs root: it installs Debian packages, creates the vmail user, and starts
      Postfix and Dovecot, which switch to their own users. Run: sudo make demo"
fi
[ -r /etc/debian_version ] || say "warning: not Debian; the package names below are Debian 12's"

# The Debian packages the stack runs (postfix-sqlite and dovecot-sqlite read the
# SQLite database; swaks and curl are the demo's clients).
pkgs="postfix postfix-sqlite dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sqlite dovecot-sieve dovecot-managesieved swaks curl ca-certificates sqlite3"
missing=
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	[ "${DEMO_NO_INSTALL:-}" = 1 ] && die "missing Debian packages:$missing (DEMO_NO_INSTALL=1 forbids installing them)"
	say "installing missing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# "No configuration": the package must not write /etc/postfix/main.cf or
	# start anything; the demo brings its own configuration.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

command -v go >/dev/null 2>&1 || die "the Go toolchain is not on PATH: install Go $(sed -n 's/^go //p' go.mod) from https://go.dev/dl/ (Debian's golang package is too old)"

say "building ./bin/postkit and ./bin/postkit-demo"
mkdir -p bin
go build -o bin/postkit ./cmd/postkit
go build -o bin/postkit-demo ./e2e/cmd/demo

detach=${DEMO_DETACH:-}
if [ -z "$detach" ]; then
	if [ -t 0 ] && [ -t 1 ]; then detach=0; else detach=1; fi
fi
if [ "$detach" = 1 ]; then
	exec bin/postkit-demo up -root "$root" -postkit "$top/bin/postkit" -detach
fi
say "running in the foreground; Ctrl-C stops the stack"
exec bin/postkit-demo up -root "$root" -postkit "$top/bin/postkit"
