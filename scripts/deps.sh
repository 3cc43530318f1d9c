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
# Real servers the e2e tests run in a lab namespace only, beside the lab's
# own doubles: RabbitMQ (e2e/rabbitmq_test.go), nginx as the API server and
# HAProxy as a load balancer on the path.
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
[ -x /usr/sbin/nginx ]                       || need+=(nginx-light)
[ -x /usr/sbin/haproxy ]                     || need+=(haproxy)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${need[*]} (run as root to install them)" >&2
  exit 1
fi
echo "installing: ${need[*]}"
# The server packages must not start a server in the root namespace:
# policy-rc.d exiting 101 tells invoke-rc.d and deb-systemd-invoke not to
# start services during the install; under systemd the units are also
# stopped and disabled afterwards. Lab tests start their own servers
# inside a namespace.
servers=" rabbitmq-server nginx-light haproxy "
starts_service=false
for p in "${need[@]}"; do [[ "$servers" == *" $p "* ]] && starts_service=true; done
if $starts_service && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
if $starts_service && [ -d /run/systemd/system ]; then
  systemctl disable --now rabbitmq-server.service epmd.socket epmd.service nginx.service haproxy.service >/dev/null 2>&1 || true
fi
