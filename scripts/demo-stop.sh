#!/bin/sh
# make demo-stop: stop the stack started by `make demo` (foreground or detached).
# Its files stay in ./demo/ for inspection; the next `make demo` replaces them.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
root=${DEMO_ROOT:-$top/demo}
case $root in /*) ;; *) root=$top/$root ;; esac
[ "$(id -u)" = 0 ] || { echo "demo-stop: needs root, like the demo: sudo make demo-stop" >&2; exit 1; }
if [ -x bin/postkit-demo ]; then
	exec bin/postkit-demo down -root "$root"
fi
exec go run ./e2e/cmd/demo down -root "$root"
