#!/bin/sh
# tools/install-deps.sh — install what building, testing and running cowfs
# needs on Debian 12, from Debian's own packages.  Idempotent; needs root.
set -eu
PKGS="build-essential pkg-config libfuse3-dev fuse3 libjansson-dev libssl-dev
      liburing-dev libgit2-dev check postgresql-15 postgresql-contrib mandoc
      man-db groff-base python3 procps psmisc util-linux systemd git"
missing=
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "install-deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
[ -c /dev/fuse ] || { echo "install-deps: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }
echo "install-deps: all dependencies present"
