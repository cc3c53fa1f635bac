"""Fine-tune Stable Diffusion (eps or v objective) on image-caption folders.

    python train_text_to_image.py --train_config configs/train/train_config_tiny_vpred.yaml
    python train_text_to_image.py -c configs/train/train_config_vanilla_v2_vpred.yaml \
        --pretrained_model_path models/sd_v2_768_v.ckpt --data_path datasets/pokemon/train
    bash scripts/run_train_distributed.sh msrun 2 -c RECIPE.yaml    # data-parallel

Every key of the recipe YAML is also a flag (flags win); run with -h for the list. MindONE's
train_text_to_image.py flags and its configs/train/*.yaml recipes are accepted unchanged (--mode 0/1 included).
"""
import logging
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ldm.errors import run_cli  # noqa: E402
from ldm.train.config import enable_compile_cache, log_level_value, parse_config  # noqa: E402


def validation_sampler(cfg):
    """Validation images come from the text-to-image pipeline (training itself never imports it)."""
    from ldm.pipeline import validation_sampler as make_validation_sampler
    return make_validation_sampler(cfg.jit, cfg.image_size)


def main(argv=None):
    cfg = parse_config(argv)
    logging.basicConfig(level=log_level_value(cfg.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    enable_compile_cache(cfg, "train")               # before the first graph is built
    from ldm.train.loop import train
    summary = train(cfg, make_sampler=validation_sampler(cfg))
    logging.getLogger("ldm.train").info("done: %d steps, last loss %.5f, outputs in %s",
                                         summary["global_step"], summary["last_loss"], summary["output_path"])
    return 0


if __name__ == "__main__":
    run_cli(main)
