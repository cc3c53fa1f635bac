"""Textual inversion: learn new token embeddings for a concept from a folder of images.

    python train_textual_inversion.py -c configs/train/train_config_textual_inversion_v2.yaml \
        --pretrained_model_path models/sd_v2_base.ckpt --train_data_dir datasets/cat_toy \
        --output_path output/cat_toy
    python text_to_image.py --ti_ckpt_path output/cat_toy/weights/learned_embeds.safetensors \
        --prompt "a <cat-toy> on the beach" ...

MindONE's train_textual_inversion.py flags and recipes are accepted unchanged; every recipe key is
also a flag (flags win). Run with -h for the list.
"""
import logging
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ldm.errors import run_cli  # noqa: E402
from ldm.train.config import enable_compile_cache, log_level_value  # noqa: E402
from ldm.train.textual_inversion import parse_config  # noqa: E402


def validation_sampler(cfg):
    """Validation images come from the text-to-image pipeline (training never imports it)."""
    from ldm.pipeline import validation_sampler as make_validation_sampler
    return make_validation_sampler(cfg.jit, cfg.image_size)


def main(argv=None):
    cfg = parse_config(argv)
    logging.basicConfig(level=log_level_value(cfg.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    enable_compile_cache(cfg, "textual_inversion")
    from ldm.train.textual_inversion import train_textual_inversion
    summary = train_textual_inversion(cfg, make_sampler=validation_sampler(cfg))
    logging.getLogger("ldm.train").info("done: %d updates, last loss %.5f, embeddings in %s/weights",
                                         summary["global_step"], summary["last_loss"], summary["output_path"])
    return 0


if __name__ == "__main__":
    run_cli(main)
