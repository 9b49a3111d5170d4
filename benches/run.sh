#!/usr/bin/env bash
# Runs callrelay's benchmarks (BENCHMARKS.md): prepares the reference webhook's virtual
# environment, then builds callrelay and the harness with the release profile and runs them.
#
#   benches/run.sh                                  # every scenario, full size
#   benches/run.sh --scenario lookup --runs 5       # one scenario, more runs
#   benches/run.sh --smoke                          # a few seconds: the harness works (CI)
#   BENCH_PROFILE=dev benches/run.sh --smoke        # reuse the debug build (CI does)
#   BENCH_CHARTS=docs/benchmarks benches/run.sh     # the charts BENCHMARKS.md shows
#
# The charts (PNG) go to target/bench-charts unless BENCH_CHARTS names another directory.
# Every argument goes to the harness (`cargo bench --bench relay -- --help` lists them). It
# needs redis-server and python3 with venv; it starts its own servers on free loopback ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v redis-server >/dev/null || {
  echo "benches/run.sh needs redis-server (apt-get install redis-server)" >&2
  exit 1
}
venv=${BASELINE_VENV:-$root/.venv-baseline}
requirements="$root/benches/baseline-requirements.txt"
if ! cmp -s "$requirements" "$venv/.requirements" 2>/dev/null; then
  echo "preparing the baseline's environment in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$requirements"
  cp "$requirements" "$venv/.requirements"
fi

# The idle-socket scenario holds as many sockets as the open-file limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

curves=${BENCH_CURVES:-$root/target/bench-curves}
rm -rf "$curves"
cargo bench --locked --profile "${BENCH_PROFILE:-bench}" --bench relay -- \
  --baseline-venv "$venv" --curves "$curves" "$@"
# The charts of what ran (BENCHMARKS.md shows those of a full run, from docs/benchmarks/).
"$venv/bin/python" "$root/benches/plot.py" "$curves" "${BENCH_CHARTS:-$root/target/bench-charts}"
