#!/usr/bin/env bash
# Builds dist/postkit_<version>_<arch>.deb with dpkg-deb: the binary (with the
# Makefile's ldflags), the systemd units, the examples, manual pages and shell
# completions generated from the command tree, copyright and changelog.
# Run through `make deb` (it passes VERSION, LDFLAGS and GO).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
LDFLAGS=${LDFLAGS:-"-X github.com/postkit/postkit/internal/version.Version=$VERSION"}
OUT=${DIST:-dist}
# The systemd units the package installs (/usr/local/bin/postkit in them
# becomes /usr/bin/postkit).
UNITS_DIR=examples/systemd

for tool in dpkg-deb dpkg-shlibdeps gzip; do
	command -v "$tool" >/dev/null || {
		echo "build-deb: $tool is missing: run scripts/install-deps.sh (Debian package dpkg-dev)" >&2
		exit 1
	}
done

# The Debian version of a git version: v1.2.3 -> 1.2.3,
# v1.2.3-4-gabc -> 1.2.3+git4.gabc, abc1234 (no tag) -> 0~git.abc1234,
# a -dirty tree -> +dirty (native versions: no hyphen).
deb_version() {
	local v=${1#v}
	if [[ $v =~ ^([0-9][0-9A-Za-z.~+]*)-([0-9]+)-(g[0-9a-f]+)(-dirty)?$ ]]; then
		v="${BASH_REMATCH[1]}+git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}${BASH_REMATCH[4]:++dirty}"
	elif [[ $v =~ ^[0-9] ]] && [[ ! $v =~ ^[0-9a-f]{7,40}(-dirty)?$ ]]; then
		v=${v//-/+}
	else
		v="0~git.${v//-/+}"
	fi
	printf '%s\n' "$v"
}
DEB_VERSION=$(deb_version "$VERSION")
ARCH=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
doc=$root/usr/share/doc/postkit

# Reproducible: every date is the last commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

echo "build-deb: postkit $VERSION as $DEB_VERSION ($ARCH)"
install -d "$root/usr/bin"
# Stripped (-s -w), position independent, relocations read-only after start;
# the C parts (SQLite, the libcrypto glue) with Debian's hardening flags.
CGO_CFLAGS=${CGO_CFLAGS:-"-g -O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong"} CGO_ENABLED=1 "$GO" build -trimpath -buildmode=pie \
	-ldflags "$LDFLAGS -s -w -extldflags '-Wl,-z,relro -Wl,-z,now'" -o "$root/usr/bin/postkit" ./cmd/postkit
bin=$root/usr/bin/postkit
objcopy --remove-section=.comment --remove-section=.note "$bin"

# Manual pages and completions, from the binary itself.
install -d "$root/usr/share/man/man1"
"$bin" docs --man "$work/man"
for page in "$work"/man/*.1; do
	install -m 0644 "$page" "$root/usr/share/man/man1/"
done
gzip -9n "$root"/usr/share/man/man1/*.1
install -d "$root/usr/share/bash-completion/completions" \
	"$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$bin" completion bash >"$root/usr/share/bash-completion/completions/postkit"
"$bin" completion zsh >"$root/usr/share/zsh/vendor-completions/_postkit"
"$bin" completion fish >"$root/usr/share/fish/vendor_completions.d/postkit.fish"

# systemd units.
install -d "$root/lib/systemd/system"
for unit in "$UNITS_DIR"/*.service "$UNITS_DIR"/*.timer; do
	[ -e "$unit" ] || continue
	sed 's#/usr/local/bin/postkit#/usr/bin/postkit#g' "$unit" >"$root/lib/systemd/system/$(basename "$unit")"
done

install -d "$root/usr/share/lintian/overrides"
install -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/postkit"

# Documentation: copyright, changelog (native package: changelog.gz), examples.
install -d "$doc/examples"
install -m 0644 packaging/deb/copyright "$doc/copyright"
{
	printf 'postkit (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
	printf '  * Built from postkit %s.\n\n' "$VERSION"
	printf ' -- postkit maintainers <postkit@packages.invalid>  %s\n' "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} >"$work/changelog"
gzip -9n -c "$work/changelog" >"$doc/changelog.gz"
cp -r examples/. "$doc/examples/"
install -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"

# Modes: directories 0755, files 0644, the binary 0755; dates from the commit.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "$bin"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# Control: shared-library dependencies from dpkg-shlibdeps.
install -d "$work/src/debian" "$root/DEBIAN"
printf 'Source: postkit\n\nPackage: postkit\nArchitecture: any\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e"$bin" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no library dependencies for $bin" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$DEB_VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@SIZE@|$size|" -e "s|@SHLIBDEPS@|$shlibs|" \
	packaging/deb/control.in >"$root/DEBIAN/control"
for script in postinst prerm postrm; do
	install -m 0755 "packaging/deb/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$OUT"
deb=$OUT/postkit_${DEB_VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "build-deb: wrote $deb"
