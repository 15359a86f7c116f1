#!/usr/bin/env bash
# Runs every fuzz target of the module briefly, one after the other: each
# `func FuzzXxx(f *testing.F)` in a _test.go file of a package of the module is
# found here by itself, so a new target needs no listing. FUZZTIME bounds each
# target (default 5s; Go's -fuzztime syntax, e.g. 30s or 10000x), and a target
# that hangs is stopped after FUZZTIMEOUT (default 3m). A failing input is kept
# under the package's testdata/fuzz/ as Go writes it; the run goes on with the
# other targets and exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
fuzztime=${FUZZTIME:-5s}
timeout=${FUZZTIMEOUT:-3m}

targets=()
while IFS=$'\t' read -r dir pkg; do
	shopt -s nullglob
	files=("$dir"/*_test.go)
	shopt -u nullglob
	[ ${#files[@]} -gt 0 ] || continue
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F).*/\1/p' "${files[@]}" | sort -u); do
		targets+=("$pkg $name")
	done
done < <("$go" list -f '{{.Dir}}{{"\t"}}{{.ImportPath}}' ./...)

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets, $fuzztime each"
failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz: $name ($pkg)"
	if ! "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -timeout "$timeout" "$pkg"; then
		failed+=("$name ($pkg)")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: all ${#targets[@]} targets passed"
