#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, one after another (about 35 minutes: the
# goodput, backlog and discovery runs are paced by the sim's rate limits).
#
#   bash benches/all.sh            # everything
#   bash benches/all.sh quick      # all not paced by rate limits (about 5 minutes)
#
# Uses DATABASE_URL's server if set, else a private cluster per benchmark.
# Prints one line per figure; nothing is asserted about speed.
set -euo pipefail
cd "$(dirname "$0")/.."

bench() { cargo bench --quiet --bench "$1" -- "${@:2}" 2>/dev/null | grep -E '^([a-z-]+:|    )'; }

cargo bench --no-run --quiet 2>&1 | grep -v '^ *Executable' || true
echo "# genq benchmarks, $(date -u +%F), $(nproc) cores, $(uname -m)"
# Queue throughput, instant provider
bench baseline
for p in 1 2; do
  bench throughput processes=$p
  bench throughput processes=$p provider=dry-run
done
bench throughput concurrency=1024
bench throughput concurrency=64 batch=64
bench completion
# Pickup, memory, claim plan, /metrics scrape
bench pickup
bench memory
bench memory provider=sim jobs=32
bench memory provider=sim jobs=32 image_mib=100000
bench plan
bench metrics
bench metrics warmup_ms=0
[ "${1:-}" = quick ] && exit 0
# Paced by rate limits (the sim allows no burst)
for p in 1 2 4; do bench goodput processes=$p jobs=300; done
bench goodput mode=learned processes=2 jobs=300
bench discovery minutes=6
bench backlog
