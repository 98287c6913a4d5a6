#!/bin/sh
# build.sh OUT builds TCPCopy's tcpcopy and intercept (C, NetEase's
# session-replay-tools) into OUT/sbin, for `make bench TCPCOPY=OUT` to run
# them side by side with stackcopy. The peer stays outside this
# repository: sources are cloned into OUT/src (or taken from
# $TCPCOPY_SRC and $INTERCEPT_SRC, git checkouts or plain directories).
# Needs git, a C compiler, make and libpcap-dev (intercept captures with
# pcap).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
src=$out/src
mkdir -p "$src"

fetch() { # name, override dir
	if [ -n "$2" ]; then
		rm -rf "$src/$1"
		if [ -d "$2/.git" ] || [ -f "$2/configure" ]; then
			cp -R "$2" "$src/$1"
		else # a bare mirror
			git clone -q "$2" "$src/$1"
		fi
	elif [ ! -d "$src/$1" ]; then
		git clone -q --depth 1 "https://github.com/session-replay-tools/$1" "$src/$1"
	fi
}
fetch tcpcopy "${TCPCOPY_SRC:-}"
fetch intercept "${INTERCEPT_SRC:-}"

for p in intercept tcpcopy; do
	(cd "$src/$p" && ./configure --prefix="$out" >"$out/$p-configure.log" 2>&1 &&
		make -j2 >"$out/$p-make.log" 2>&1 && make install >>"$out/$p-make.log" 2>&1) ||
		{ echo "build.sh: building $p failed; see $out/$p-configure.log and $out/$p-make.log" >&2; exit 1; }
done
echo "build.sh: $out/sbin/tcpcopy and $out/sbin/intercept"
