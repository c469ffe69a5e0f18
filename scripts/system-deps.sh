#!/usr/bin/env bash
# Install the Debian packages meshlens' tests and benchmarks use, if any is missing.
set -euo pipefail
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
# HTTP/2 rows of bench/sidecar_proxy.py (h2load drives h2c)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
# the mypyc build of the sidecar's hot path (scripts/build_native.py; pure Python without them)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
py=${PYTHON:-python3}
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[ -n "$inc" ] && [ -f "$inc/Python.h" ] || need+=(python3-dev)
# curl as an unmodified client: through http_proxy (test_sidecar_proxy.py) and captured
command -v curl >/dev/null 2>&1 || need+=(curl)
# transparent capture test (tests/integration/test_sidecar_capture.py): netns, veth, nat rules
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need+=(iptables)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
# Headless browser for the UI tests (tests/ui, driven by Playwright; never `playwright install`).
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
