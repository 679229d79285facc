#!/usr/bin/env bash
# One device call for a session that has a GPU (benchmarks/gpu_train.md, "One call"). In order, each step
# with what is left of the budget:
#   1. the cross-device check: Kodak compressed on the GPU, one tar for `device_check.py verify` here;
#   2. `vqcodec bench --codecs vqcodec --device cuda` (whole files, 24 Kodak images, every quality);
#   3. the autoencoder phase of $RECIPE until the budget's end (`vqcodec train --recipe --phase`), resuming
#      from runs/gpu when it is carried; its checkpoint comes back in parts.
# Everything it returns is under $OUT (at most 8 files): device_check.tar, bench_cuda.tar, session.log and
# the checkpoint's parts.
#
# The device tool's call (after the packs and the wheel were made here, gpu_train.md):
#   command: bash benchmarks/gpu_session.sh      carry: [".whl", "packs/s0"] (+ "runs/gpu" to resume)
#   timeout_s: 570 (BUDGET_S below is counted from the script's start and leaves the rest for returning files)
# A smoke test on the CPU (what tests cannot reach, the GPU, is the only difference):
#   OUT=/tmp/gs DEVICE=cpu BUDGET_S=150 BENCH_ARGS="--max-images 1 --qualities 2" QUALITIES=3 \
#     IMAGES=/tmp/few PACK=packs/tiny RUN=runs/gpu-smoke bash benchmarks/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT (the device tool sets it)}"
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-510}           # seconds for all three steps
RECIPE=${RECIPE:-models/vqf8-r1/recipe.json}   # the model being trained (its schedule, its length)
PHASE=${PHASE:-autoencoder}
PACK=${PACK:-packs}
RUN=${RUN:-runs/gpu}                # the checkpoint folder (carry it to resume)
QUALITIES=${QUALITIES:-1,3,6,9,12}
IMAGES=${IMAGES:-benchmarks/kodak}
BENCH_ARGS=${BENCH_ARGS:-}
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }

mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then   # constriction, which the device's image lacks
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
python3 -c "import constriction, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || {
  echo "Error: constriction or torch cannot be imported: carry .whl (gpu_train.md)"; exit 3; }
[ "$DEVICE" = cpu ] || nvidia-smi -L

echo "== 1. cross-device check ($(left) s left)"
t=$(date +%s)
python3 benchmarks/device_check.py encode "$OUT/device_check.tar" --device "$DEVICE" --qualities "$QUALITIES" --images "$IMAGES"
echo "device_check: $(( $(date +%s) - t )) s"

echo "== 2. bench on $DEVICE ($(left) s left)"
t=$(date +%s)
# shellcheck disable=SC2086
python3 -m vqcodec.cli bench --codecs vqcodec --device "$DEVICE" --out /tmp/bench_cuda --no-progress $BENCH_ARGS \
  && tar -cf "$OUT/bench_cuda.tar" -C /tmp bench_cuda
echo "bench: $(( $(date +%s) - t )) s"

limit=$(( $(left) - 20 ))
echo "== 3. training, time limit $limit s"
if [ "$limit" -lt 60 ]; then echo "too little time left to train"; exit 0; fi
if ls "$RUN/$PHASE"/autoencoder.ckpt* >/dev/null 2>&1; then echo "resuming from $RUN"; else echo "no checkpoint carried: starting $RECIPE afresh"; fi
python3 -m vqcodec.cli train --recipe "$RECIPE" --phase "$PHASE" --data "$PACK" --out "$RUN" --device "$DEVICE" \
  --copy-checkpoints-to "$OUT" --slim-checkpoints --time-limit "$limit"
echo "== done in $(( $(date +%s) - start )) s"
