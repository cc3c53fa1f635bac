#!/usr/bin/env bash
# The ControlNet demo on CPU: train a ControlNet that makes the shipped tiny base (models/tiny_shapes_base.ckpt,
# which only ever drew its shapes at five captioned places) draw the shape where a control image puts it.
#   1. data (datasets/synthetic_control.py): shapes anywhere in the picture, their canny edges as control images,
#      captions without the place (MindONE's prompt.json layout);
#   2. train_controlnet.py with configs/train/train_config_tiny_shapes_controlnet.yaml (eps, the base's objective);
#   3. scripts/score_control.py: the held-out control images with their prompts, sampled WITH the ControlNet and
#      WITHOUT it (same prompts and seeds), scored by the shape scorer (centre within TOLERANCE px of the
#      control's, shape kind, colour); the demo fails when the ControlNet's position score is below MIN_POSITION.
# docs/controlnet.md "Demo" has measured numbers.
#
#   bash scripts/demo_controlnet.sh     (env: VENV=.venv OUT=output/demo_controlnet BASE_CKPT=... STEPS NUM_TRAIN
#                                        SCALE TOLERANCE MIN_POSITION)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/demo_controlnet}
BASE_CKPT=${BASE_CKPT:-models/tiny_shapes_base.ckpt}
STEPS=${STEPS:-1000}
NUM_TRAIN=${NUM_TRAIN:-2000}
SCALE=${SCALE:-4}
TOLERANCE=${TOLERANCE:-4}
MIN_POSITION=${MIN_POSITION:-0.5}
if [ ! -f "$BASE_CKPT" ]; then
    echo "demo_controlnet.sh: error: base checkpoint $BASE_CKPT not found (docs/demo.md 'Demo model' rebuilds it)" >&2
    exit 2
fi
. scripts/setup_venv.sh     # $VENV with requirements.txt installed; sets PY and GLOG_v
DATA="$OUT/data"

echo "== data: $NUM_TRAIN shapes at random places with their canny edges, 40 held out -> $DATA"
"$PY" datasets/synthetic_control.py --output_path "$DATA" --num_train "$NUM_TRAIN" --num_test 40 --size 32

echo "== ControlNet training ($STEPS steps) -> $OUT/train"
start=$SECONDS
"$PY" train_controlnet.py -c configs/train/train_config_tiny_shapes_controlnet.yaml --data_path "$DATA/train" \
    --output_path "$OUT/train" --pretrained_model_path "$BASE_CKPT" --max_steps "$STEPS" --ckpt_save_interval "$STEPS"
echo "   training took $((SECONDS - start)) s"
CKPT="$OUT/train/ckpt/sd-${STEPS}_controlnet.ckpt"

echo "== held-out control images, with and without the ControlNet (DPM-Solver++ 2M, 15 steps, scale $SCALE)"
"$PY" scripts/score_control.py --config configs/tiny-shapes-controlnet.yaml --ckpt_path "$BASE_CKPT" \
    --controlnet "$CKPT" --data "$DATA/test" --output_path "$OUT/heldout" --scale "$SCALE" \
    --tolerance "$TOLERANCE" --min_position "$MIN_POSITION"

echo
echo "ControlNet:   $CKPT   (controlnet_image2image.py --controlnet; model config $OUT/train/ckpt/model_config.yaml)"
echo "loss curve:   $OUT/train/loss_curve.png   (per-step metrics: $OUT/train/metrics.csv)"
echo "images:       $OUT/heldout/with/, $OUT/heldout/without/   scores: $OUT/heldout/scores.json"
