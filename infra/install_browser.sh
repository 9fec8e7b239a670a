#!/usr/bin/env bash
# Installs Chromium and its WebDriver from Debian's packages (the web page's end-to-end test drives a
# real browser; tools that download their own browser cannot here). Non-interactive, safe to re-run.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser.sh: chromium is missing and apt-get is not available; install chromium and chromium-driver yourself" >&2
  exit 1
fi
echo "installing chromium and chromium-driver"
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver
test -x /usr/bin/chromium && test -x /usr/bin/chromedriver
