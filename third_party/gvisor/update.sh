#!/bin/sh
# update.sh regenerates this directory: the part of gVisor that stackcopy
# builds, at the upstream version below, with patches/*.patch applied.
#
# "The part" is every package stackcopy imports and, under any build tag,
# everything those import from gVisor, so `go mod tidy` finds each import
# for every platform. Non-Go files, tests and the rest of the 70 MB module
# are left out.
#
# To move to a newer gVisor: change VERSION (and the require line in
# ../../go.mod), run this script, and fix any patch that no longer
# applies. Run from anywhere; needs go and patch.
set -eu

VERSION=v0.0.0-20260905035102-160fafc42237

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
src=$(go mod download -json "gvisor.dev/gvisor@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "update.sh: gvisor.dev/gvisor@$VERSION not in the module cache" >&2; exit 1; }

# gVisor packages named in .go files (any build tag) under the given dirs.
imports() {
	find "$@" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cat {} + 2>/dev/null |
		grep -o '"gvisor.dev/gvisor/[A-Za-z0-9_/-]*"' | tr -d '"' | sed 's|^gvisor.dev/gvisor/||' | sort -u
}

want=$(find "$repo" -path "$here" -prune -o -name '*.go' -print |
	xargs grep -ho '"gvisor.dev/gvisor/[A-Za-z0-9_/-]*"' | tr -d '"' | sed 's|^gvisor.dev/gvisor/||' | sort -u)
while :; do
	dirs=$(for p in $want; do echo "$src/$p"; done)
	# shellcheck disable=SC2086
	more=$( (echo "$want"; imports $dirs) | sort -u)
	[ "$more" = "$want" ] && break
	want=$more
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in $want; do
	mkdir -p "$tmp/$p"
	find "$src/$p" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$tmp/$p/" \;
done
cp "$src/go.mod" "$src/LICENSE" "$tmp/"
chmod -R u+w "$tmp"
for patch in "$here"/patches/*.patch; do
	patch -s -d "$tmp" -p1 <"$patch"
done
find "$here" -mindepth 1 -maxdepth 1 ! -name patches ! -name update.sh ! -name README.md -exec rm -rf {} +
cp -R "$tmp"/. "$here"/
echo "update.sh: gvisor.dev/gvisor@$VERSION, $(echo "$want" | wc -l) packages, $(ls "$here"/patches/*.patch | wc -l) patches"
