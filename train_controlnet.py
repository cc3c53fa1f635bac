"""Train a ControlNet on a frozen Stable Diffusion 1.x / 2.x base model (v or eps: the base model's objective).

    python train_controlnet.py -c configs/train/sd15_controlnet_canny.yaml \
        --pretrained_model_path models/sd_v1.5-d0ab7146.ckpt --data_path datasets/fill50k --output_path output/cn
    python train_controlnet.py --model_config configs/v2-controlnet-inference.yaml \
        --pretrained_model_path models/sd_v2-1_base-7c8d09ce.ckpt --data_path photos/ --detector canny ...
    python controlnet_image2image.py --ckpt_path models/sd_v1.5-d0ab7146.ckpt \
        --controlnet output/cn/ckpt/sd-14_controlnet.ckpt --control_image edges.png --prompt "..."

MindONE's train_cldm.py flags and recipes are accepted unchanged; every recipe key is also a flag (flags win).
Data layouts, outputs and MindONE differences: docs/controlnet.md "Training". Run with -h for the list.
"""
import logging
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ldm.errors import run_cli  # noqa: E402
from ldm.train.config import enable_compile_cache, log_level_value  # noqa: E402
from ldm.train.controlnet import parse_config  # noqa: E402


def validation_sampler(cfg):
    """Validation images come from the ControlNet pipeline (training itself never imports it)."""
    def make(model, config, controlnet):
        from ldm.errors import UserError
        from ldm.pipeline_controlnet import ControlNetPipeline
        pipe = ControlNetPipeline(model, [controlnet], config, compile=cfg.jit)
        try:
            pipe.check_size(cfg.image_size, cfg.image_size, pipe.geometry)
        except UserError as exc:
            raise UserError(f"validation images at image_size {cfg.image_size}: {exc}") from exc
        return pipe
    return make


def main(argv=None):
    cfg = parse_config(argv)
    logging.basicConfig(level=log_level_value(cfg.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ldm.compile_cache import file_stamp
    enable_compile_cache(cfg, "controlnet", controlnet=file_stamp(cfg.controlnet_path))   # before the first graph
    from ldm.train.controlnet import train_controlnet
    summary = train_controlnet(cfg, make_sampler=validation_sampler(cfg))
    logging.getLogger("ldm.train").info("done: %d steps, last loss %.5f, ControlNet in %s/ckpt",
                                         summary["global_step"], summary["last_loss"], summary["output_path"])
    return 0


if __name__ == "__main__":
    run_cli(main)
