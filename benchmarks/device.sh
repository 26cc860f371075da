#!/usr/bin/env bash
# The study's GPU work in one call of at most 10 minutes, on a copy of the tree without its git
# history: check the GPU, time speed.py, train `claims` under the report's text and its code, then
# as much of `report` as the time left allows, each sweep stopping on time (--stop-after: its groups
# in progress checkpoint), write each study's report, and pack what comes back into $OUT (one
# archive per study with its store and checkpoints, speed.py's result file, the log). Archives of an
# earlier call in .device/carry/ are unpacked first, so a study spans several calls.
#
#   bash benchmarks/device.sh --prepare                                        # here, once: .device/
#   BNONLY_COMMIT=$(git rev-parse HEAD) bash benchmarks/device.sh            # on the GPU machine
#   bash benchmarks/device.sh --cpu-tiny                                       # here: the same steps, tiny
#
# The machine has PyTorch and bnonly's other dependencies but no package index: bnonly runs from
# src/ (PYTHONPATH), and MNIST comes as bnonly's own cache file, compressed into .device/ by
# --prepare (git ignores it; the call carries it). BNONLY_COMMIT names the commit the runs record.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .device
    grep -qx "/.device/" .git/info/exclude 2>/dev/null || echo "/.device/" >> .git/info/exclude
    ${PYTHON:-python3} -c "import numpy as np; from bnonly.registry.data import cache_dir, load_mnist; r = load_mnist(); \
np.savez_compressed('.device/mnist-uint8.npz', x_train=r.x_train, y_train=r.y_train, x_test=r.x_test, y_test=r.y_test)"
    ls -l .device
    exit 0
fi
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT" runs
export PYTHONPATH=src PYTHONUNBUFFERED=1 BNONLY_CACHE=${BNONLY_CACHE:-.device}
PY=${PYTHON:-python3}
START=$(date +%s)
LIMIT=${LIMIT:-570}  # seconds for everything, packing included
DEVICE=cuda
TINY=()
if [ "${1:-}" = "--cpu-tiny" ]; then  # the same steps on this machine's CPU, on tiny grids
    DEVICE=cpu
    LIMIT=${LIMIT_TINY:-300}
    TINY=(--set 'widths=[8]' --set 'depths=[2,4]' --set subset=600 --set max_epochs=2 --set 'seeds=[0,1]')
fi
left() { echo $(( LIMIT - ($(date +%s) - START) )); }
for archive in .device/carry/*.tgz; do  # an earlier call's studies, stores and checkpoints: go on from them
    [ -f "$archive" ] && tar xzf "$archive" -C runs
done
{
    echo "== device $DEVICE, commit ${BNONLY_COMMIT:-unknown}, $(date -u '+%Y-%m-%d %H:%M UTC')"
    [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    if [ "$DEVICE" = cuda ]; then
        echo "== speed.py --quick"
        timeout $(( $(left) / 4 )) $PY benchmarks/speed.py --device cuda --quick --results "$OUT"
    fi
    for preset in report report-code; do
        echo "== claims under $preset ($(left) s left)"
        # --stop-after: every group in progress checkpoints and the sweep exits 0 (the next call goes on);
        # timeout only as a backstop, a minute past it
        budget=$(( $(left) / 3 ))
        timeout $(( budget + 60 )) $PY -m bnonly sweep claims --device $DEVICE --out runs/claims-$preset \
            --set preset=$preset --no-estimate --stop-after ${budget}s "${TINY[@]}"
        timeout 120 $PY -m bnonly report runs/claims-$preset
    done
    echo "== report grid ($(left) s left)"
    budget=$(( $(left) - 150 ))
    if [ $budget -ge 30 ]; then
        timeout $(( budget + 60 )) $PY -m bnonly sweep report --device $DEVICE --out runs/report --no-estimate \
            --stop-after ${budget}s "${TINY[@]}"
        timeout 120 $PY -m bnonly report runs/report
    else
        echo "(too little time left for the report grid)"
    fi
} 2>&1 | tee "$OUT/device.log"
for study in runs/claims-report runs/claims-report-code runs/report; do
    [ -f $study/results.sqlite ] || continue
    # the whole study: its report, its store and the checkpoints of groups in progress. Carried back
    # (copy the archives into .device/carry/ here, and carry .device), the next call goes on from them.
    (cd runs && tar czf "$OUT/$(basename $study).tgz" "$(basename $study)")
done
ls -l "$OUT"
