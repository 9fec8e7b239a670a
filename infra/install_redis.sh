#!/usr/bin/env bash
# Installs redis-server (Feast's production online store; the tests run against a
# real one) unless it is already on PATH. Non-interactive, safe to re-run.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_redis.sh: redis-server is missing and apt-get is not available; install redis-server (>= 6) yourself" >&2
  exit 1
fi
echo "installing redis-server"
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
$sudo apt-get update -qq
# On a host with systemd the package also starts a distro service on 6379; streamrec runs its
# own (infra/redis.py) and, if that port is taken, says so when it starts.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server
command -v redis-server >/dev/null
