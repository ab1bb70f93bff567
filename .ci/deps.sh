#!/bin/sh
# Installs the Debian packages listed in .ci/packages that are missing
# (as root, or through sudo).
set -eu
missing=""
for p in $(grep -v '^#' "$(dirname "$0")/packages"); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
