#!/bin/sh
# Installs every Debian package that wsq's build and tests need, only when one is missing.
# Idempotent; safe to run on every build. Needs root (or sudo) only when something is missing.
set -eu

PKGS="build-essential cmake pkg-config git ca-certificates
libwebsockets-dev libwebsockets-evlib-ev libev-dev liblmdb-dev lmdb-utils libyaml-dev libcmocka-dev
libjansson-dev libssl-dev zlib1g-dev libisal-dev libcurl4-openssl-dev
python3 python3-websockets python3-paho-mqtt python3-jwt python3-cryptography openssl curl procps iproute2
clang libclang-rt-14-dev valgrind
help2man adduser dpkg-dev groff-base systemd"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
