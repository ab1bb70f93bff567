#!/bin/sh
# Installs the Debian packages listed in .ci/packages that are missing
# (PACKAGE:COMMAND: unless COMMAND is on the PATH already)
# (as root, or through sudo).
set -eu
missing=""
for line in $(grep -v '^#' "$(dirname "$0")/packages"); do
  p=${line%%:*} cmd=${line#*:}
  [ "$cmd" != "$line" ] && command -v "$cmd" >/dev/null 2>&1 && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
