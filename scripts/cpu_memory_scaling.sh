#!/usr/bin/env bash
# Peak resident memory of the `lpnsr` CLI on the CPU against the input size, with a fixed tile (default 128 LR px).
# Usage: bash scripts/cpu_memory_scaling.sh [OPTIONS_YML] [TILE] [SIZES...]
# Prints one line per LR size: size, tile, wall seconds, peak RSS (MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OPT=${1:-options/demo/inference_lpnsr_demo.yml}
TILE=${2:-128}
shift $(( $# < 2 ? $# : 2 ))
SIZES=${*:-128 256 512 1024}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "lr_size tile seconds peak_rss_mib"
for size in $SIZES; do
  "$PY" - "$WORK/in_$size.png" "$size" <<'PYEOF'
import sys, cv2, numpy as np
from skimage import data
size = int(sys.argv[2])
img = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (size, size), interpolation=cv2.INTER_AREA)
cv2.imwrite(sys.argv[1], img)
PYEOF
  start=$(date +%s.%N)
  peak_kib=$("$PY" - "$OPT" "$TILE" "$WORK/in_$size.png" "$WORK/out_$size" <<'PYEOF'
import resource, sys
from lpnsr_arch.inference import main
opt, tile, src, dst = sys.argv[1:]
main(['-i', src, '-o', dst, '--opt', opt, '--tile', tile, '--device', 'cpu', '--quiet'])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
PYEOF
)
  end=$(date +%s.%N)
  echo "$size $TILE $(echo "$end - $start" | bc) $((peak_kib / 1024))"
done
