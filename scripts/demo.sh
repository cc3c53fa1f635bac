#!/usr/bin/env bash
# The whole job on CPU in a few minutes: a fresh virtual environment, the synthetic shapes data,
# a v-prediction fine-tune of the shipped eps base model (models/tiny_shapes_base.ckpt, SD 2.x
# structure with tiny widths), a DPM-Solver sample grid for the test prompts, the loss curve, the
# prompt-following score of the samples, and FID/KID against the test images when the FID weights exist.
#
#   bash scripts/demo.sh            (env: VENV=.venv OUT=output/demo STEPS=300 BASE_CKPT=... SCALE=...
#                                     MIN_COLOUR, MIN_SHAPE, MIN_POSITION: the demo fails below these scores;
#                                     defaults 0.6, 0.45, 0.5)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/demo}
STEPS=${STEPS:-300}
SCALE=${SCALE:-4}
BASE_CKPT=${BASE_CKPT:-models/tiny_shapes_base.ckpt}
if [ ! -f "$BASE_CKPT" ]; then
    echo "demo.sh: error: base checkpoint $BASE_CKPT not found (docs/demo.md 'Demo model' rebuilds it)" >&2
    exit 2
fi

. scripts/setup_venv.sh     # $VENV with requirements.txt installed; sets PY and GLOG_v

echo "== synthetic shapes data -> datasets/shapes"
"$PY" datasets/synthetic_shapes.py --output_path datasets/shapes --num_train 400 --num_test 40 --size 32

echo "== v-prediction fine-tune ($STEPS steps) -> $OUT/train"
"$PY" train_text_to_image.py -c configs/train/train_config_tiny_shapes_vpred.yaml \
    --data_path datasets/shapes/train --output_path "$OUT/train" --max_steps "$STEPS" \
    --ckpt_save_interval "$STEPS" --pretrained_model_path "$BASE_CKPT"
CKPT=$(ls -t "$OUT"/train/ckpt/sd-*.ckpt | head -n 1)

echo "== DPM-Solver++ 2M samples, one per test prompt -> $OUT/samples"
"$PY" text_to_image.py --config configs/tiny-shapes-v2-vpred.yaml --ckpt_path "$CKPT" \
    --data_path datasets/shapes/test_prompts.txt --pack_prompts --n_iter 1 --n_samples 8 --W 32 --H 32 \
    --sampler dpm_solver --sampling_steps 15 --scale "$SCALE" --seed 42 --output_path "$OUT/samples"

echo "== prompt following (colour, shape, position, background of the drawn shape vs its caption)"
"$PY" scripts/score_shapes.py --output_path "$OUT/samples" --json_out "$OUT/prompt_following.json" \
    --min_colour "${MIN_COLOUR:-0.6}" --min_shape "${MIN_SHAPE:-0.45}" \
    --min_position "${MIN_POSITION:-0.5}"

echo "== FID/KID of the samples against the test images (needs FID Inception weights)"
if [ -f models/pt_inception-2015-12-05-6726825d.pth ]; then
    "$PY" eval/eval_fid.py --real_dir datasets/shapes/test --gen_dir "$OUT/samples/samples" --kid
else
    echo "   skipped: put pytorch-fid's pt_inception-2015-12-05-6726825d.pth into models/ to enable"
fi

echo
echo "checkpoint:   $CKPT"
echo "loss curve:   $OUT/train/loss_curve.png   (per-step metrics: $OUT/train/metrics.csv)"
echo "samples:      $OUT/samples/samples/       grid: $(ls "$OUT"/samples/*.png 2>/dev/null | head -n 1)"
echo "manifest:     $(ls "$OUT"/samples/manifest.* 2>/dev/null | tr '\n' ' ')"
echo "prompt score: $OUT/prompt_following.json"
