#!/bin/sh
# Installs the Debian packages listed in .ci/packages (as root, or through sudo).
set -eu
here=$(dirname "$0")
pkgs=$(grep -v '^#' "$here/packages" | tr '\n' ' ')
missing=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' $pkgs 2>/dev/null | awk '$2 != "installed" {print $1}')
missing="$missing $(for p in $pkgs; do dpkg-query -W "$p" >/dev/null 2>&1 || echo "$p"; done)"
missing=$(echo $missing)
[ -z "$missing" ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
