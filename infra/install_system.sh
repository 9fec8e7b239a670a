#!/usr/bin/env bash
# Installs what pip cannot, each step only when missing: a Java runtime for
# Spark, redis-server (Feast's production online store, tested for real) and
# the embedded LLM runtime + weights, and Chromium for the web page's browser test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
if [ "${java_major:-0}" -lt 17 ] 2>/dev/null; then
  echo "installing openjdk-17-jre-headless (Spark needs Java 17)"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless
fi
bash "$here/install_redis.sh"
bash "$here/install_browser.sh"
bash "$here/install_llm.sh"
