#!/usr/bin/env bash
# The new-concept demo on CPU: teach the shipped tiny base (models/tiny_shapes_base.ckpt, which only ever saw
# circles, squares and triangles) a star, from a few images of a red star on white, two ways:
#   1. textual inversion: one new token embedding, every weight frozen (train_textual_inversion.py);
#   2. DreamBooth with LoRA on the UNet and prior preservation (train_dreambooth.py);
# then sample held-out prompts (the star in other colours and on other backgrounds), score them
# (scripts/score_concept.py: the fraction drawn as a star, told apart from the three known shapes by mask IoU),
# score the class prompts (the three known shapes) the same way for the base and the DreamBooth model, and
# print the scores and how long each stage took. docs/demo.md "New-concept demo" has measured numbers.
#
#   bash scripts/demo_concepts.sh     (env: VENV=.venv OUT=output/concepts BASE_CKPT=... TI_STEPS DB_STEPS
#                                      SEEDS (images per prompt) SCALE)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/concepts}
BASE_CKPT=${BASE_CKPT:-models/tiny_shapes_base.ckpt}
TI_STEPS=${TI_STEPS:-200}
DB_STEPS=${DB_STEPS:-150}
SEEDS=${SEEDS:-3}
SCALE=${SCALE:-4}
if [ ! -f "$BASE_CKPT" ]; then
    echo "demo_concepts.sh: error: base checkpoint $BASE_CKPT not found (docs/demo.md 'Demo model' rebuilds it)" >&2
    exit 2
fi
. scripts/setup_venv.sh     # $VENV with requirements.txt installed; sets PY and GLOG_v
DATA="$OUT/data"
TIMES=""
stage() {   # stage NAME COMMAND...: run it, remember its wall time
    local name=$1 start=$SECONDS
    shift
    echo "== $name"
    "$@"
    TIMES="$TIMES$(printf '%-34s %5d s' "$name" $((SECONDS - start)))\n"
}
sample() {  # sample OUTDIR PROMPTS [extra text_to_image.py flags]: SEEDS images per prompt, DPM-Solver 15 steps
    local dir=$1 prompts=$2
    shift 2
    "$PY" text_to_image.py --config configs/tiny-shapes-v2.yaml --ckpt_path "$BASE_CKPT" --data_path "$prompts" \
        --pack_prompts --n_iter "$SEEDS" --n_samples 8 --W 32 --H 32 --sampler dpm_solver --sampling_steps 15 \
        --scale "$SCALE" --seed 42 --skip_grid --output_path "$dir" "$@" > "$dir.log" 2>&1 \
        || { tail -n 5 "$dir.log" >&2; return 2; }
}
score() {   # score NAME OUTDIR: the concept and class scores of one sample folder, as JSON
    "$PY" scripts/score_concept.py --output_path "$2" --concept star --json_out "$OUT/scores_$1.json"
}
rm -rf "$OUT"
mkdir -p "$OUT"

stage "concept data (red star on white)" "$PY" datasets/synthetic_concept.py --output_path "$DATA" --concept star
# the base model on every prompt: the concept's rare token and placeholder (it must fail), the class prompts
cat "$DATA/heldout_token.txt" "$DATA/heldout_placeholder.txt" "$DATA/class_prompts.txt" > "$OUT/base_prompts.txt"
stage "base: held-out + class samples" sample "$OUT/base_samples" "$OUT/base_prompts.txt"

stage "textual inversion ($TI_STEPS steps)" "$PY" train_textual_inversion.py \
    -c configs/train/train_config_tiny_concept_textual_inversion.yaml --pretrained_model_path "$BASE_CKPT" \
    --train_data_dir "$DATA/instance" --template_file "$DATA/ti_templates.txt" --output_path "$OUT/ti" \
    --max_steps "$TI_STEPS" --ckpt_save_interval "$TI_STEPS"
stage "textual inversion: held-out samples" sample "$OUT/ti_samples" "$DATA/heldout_placeholder.txt" \
    --ti_ckpt_path "$OUT/ti/weights/learned_embeds.safetensors"

stage "DreamBooth LoRA + prior ($DB_STEPS steps)" "$PY" train_dreambooth.py \
    -c configs/train/train_config_tiny_concept_dreambooth_lora.yaml --pretrained_model_path "$BASE_CKPT" \
    --instance_data_dir "$DATA/instance" --class_data_dir "$DATA/class" --output_path "$OUT/dreambooth" \
    --max_steps "$DB_STEPS" --ckpt_save_interval "$DB_STEPS"
LORA=$(ls -t "$OUT"/dreambooth/ckpt/*_lora.ckpt | head -n 1)
cat "$DATA/heldout_token.txt" "$DATA/class_prompts.txt" > "$OUT/db_prompts.txt"
stage "DreamBooth: held-out + class samples" sample "$OUT/db_samples" "$OUT/db_prompts.txt" --lora_ckpt_path "$LORA"

echo
echo "== scores (concept: fraction of held-out concept prompts drawn as a star; class: the known shapes' scores)"
echo "base model:        $(score base "$OUT/base_samples")"
echo "textual inversion: $(score ti "$OUT/ti_samples")"
echo "DreamBooth LoRA:   $(score dreambooth "$OUT/db_samples")"
echo
echo "== time per stage"
printf "%b" "$TIMES"
echo "scores:  $OUT/scores_*.json    samples: $OUT/*_samples/samples/"
