#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, one after another (about 60 minutes: the
# goodput, backlog and discovery runs are paced by the sim's rate limits).
#
#   bash benches/all.sh            # everything
#   bash benches/all.sh quick      # all but goodput (about 3 minutes)
#
# Uses DATABASE_URL's server if set, else a private cluster per benchmark.
# Prints one line per figure; nothing is asserted about speed.
set -euo pipefail
cd "$(dirname "$0")/.."

bench() { cargo bench --quiet --bench "$1" -- "${@:2}" 2>/dev/null | grep -E '^[a-z-]+:'; }

cargo bench --no-run --quiet 2>&1 | grep -v '^ *Executable' || true
echo "# genq benchmarks, $(date -u +%F), $(nproc) cores, $(uname -m)"
bench baseline
for p in 1 2; do
  bench throughput processes=$p
  bench throughput processes=$p provider=dry-run
done
bench throughput concurrency=1024
bench pickup
bench memory
[ "${1:-}" = quick ] && exit 0
for mode in configured learned; do
  for p in 1 2 4; do bench goodput mode=$mode processes=$p; done
done
bench goodput mode=aimd
bench backlog
bench discovery
