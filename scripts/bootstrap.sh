#!/usr/bin/env bash
# Install what photo-sync needs on this machine: Debian packages when missing (PostgreSQL,
# procps, promtool and prometheus-node-exporter, and the bench's peers rclone, wrk and nginx), and the project venv (.venv) with the
# package and its test/fleet tools.
# Usage: scripts/bootstrap.sh [python-extras]   (default: test,fleet)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test,fleet}"

need_apt=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v pgrep >/dev/null || need_apt+=(procps)
# The peers `make bench` times photo-sync against (tests/test_bench.py runs them too).
command -v rclone >/dev/null || need_apt+=(rclone)
command -v wrk >/dev/null || need_apt+=(wrk)
# nginx serves the same photos from disk as the store photo server's peer (bench/verify_serve.py).
command -v nginx >/dev/null || need_apt+=(nginx-light)
# promtool checks and unit-tests the alerting rules (tests/test_alerts.py).
command -v promtool >/dev/null || need_apt+=(prometheus)
# The end-to-end monitoring test scrapes a store's textfile through a real node_exporter.
command -v prometheus-node-exporter >/dev/null || need_apt+=(prometheus-node-exporter)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a cluster of its own; the tests run their own.
  command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
    pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
  done
fi

stamp=.venv/.photo-sync-installed
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $extras"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating .venv with photo-sync[$extras]"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  .venv/bin/pip install -q -e ".[$extras]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import photo_sync, flask, psycopg, minio" \
    || { echo "bootstrap: the venv install failed; see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
