#!/usr/bin/env bash
# Installs what the namespace lab and the package test need (Debian/Ubuntu),
# only when missing.
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
# e2e/package_test.go: setcap (the package's postinst) and getcap; dpkg and
# gzip are part of every Debian system.
command -v setcap >/dev/null     || need+=(libcap2-bin)
command -v getcap >/dev/null     || need+=(libcap2-bin)
# A real RabbitMQ broker for e2e/rabbitmq_test.go (run in a lab namespace only).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${need[*]} (run as root to install them)" >&2
  exit 1
fi
echo "installing: ${need[*]}"
# The rabbitmq-server package must not start a broker in the root
# namespace: policy-rc.d exiting 101 tells invoke-rc.d and
# deb-systemd-invoke not to start services during the install; under
# systemd the unit is also stopped and disabled afterwards. Lab tests start
# their own broker inside a namespace.
if [[ " ${need[*]} " == *" rabbitmq-server "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
if [[ " ${need[*]} " == *" rabbitmq-server "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now rabbitmq-server.service epmd.socket epmd.service >/dev/null 2>&1 || true
fi
