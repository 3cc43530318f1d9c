#!/usr/bin/env bash
# Installs what the namespace lab needs (Debian/Ubuntu), only when missing.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
need=()
command -v nft >/dev/null        || need+=(nftables)
command -v ip >/dev/null         || need+=(iproute2)
command -v traceroute >/dev/null || need+=(traceroute)
command -v setpriv >/dev/null    || need+=(util-linux)
command -v make >/dev/null       || need+=(make)
# tshark: the e2e tests open every --evidence capture with it (about 16 s to install).
command -v tshark >/dev/null     || need+=(tshark)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${need[*]} (run as root to install them)" >&2
  exit 1
fi
echo "installing: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
