"""ControlNet training (MindONE's ``train_cldm.py``): a ControlNet learns to steer a frozen Stable Diffusion 1.x / 2.x
base model (UNet, VAE and text encoder all frozen) with control images (edges, poses, masks ...).

This is the ordinary training run (:class:`ldm.train.loop.TrainRun`: the base model's objective, eps or v, with
kohya-ss's loss and noise options; compiled step, EMA, gradient accumulation, clipping, loss scaling, resume bit
for bit, data parallel, metrics.csv and the loss curve) with these hooks changed:

* data: (image, control image, caption) triples of the layouts in :mod:`ldm.data.controlnet_dataset` (MindONE's
  prompt.json, diffusers' metadata.jsonl, images/ + controls/ folders), or control images made on the fly by a
  detector (``detector canny``);
* model: the base model as train_text_to_image.py loads it, plus the ControlNet: a copy of the base UNet's encoder
  and middle block with zero convolutions (:func:`ldm.models.controlnet.build_controlnet_from_unet`: the controlled
  model starts as the base model), or the one of ``controlnet_path`` to continue training;
* trainable: the ControlNet's parameters only;
* objective: the UNet is called with the ControlNet's residuals (:class:`ControlNetObjective`); the control image
  enters the compiled step as the objective's extra input (the hint, (N, 3, H, W) in [0, 1]);
* saved weights: ``ckpt/sd-{N}_controlnet.ckpt`` (:func:`ldm.convert.controlnet.save_controlnet`: MindONE names
  under ``control_model.``, CRC, atomic; EMA weights when ``use_ema``), read by ``controlnet_image2image.py
  --controlnet``; ``ckpt/model_config.yaml`` is the base model's YAML with the ControlNet's
  ``control_stage_config``.

The objective is the base model's own (its YAML's prediction_type and schedule): the frozen UNet predicts what it
was trained to predict, so ``prediction_type`` / ``rescale_zero_snr`` that differ from the model config are refused.
MindONE's recipe keys (``configs/train/sd15_controlnet_canny.yaml``, ``sd15_controlnet_openpose.yaml``) are
accepted unchanged; where its train_cldm.py defaults differ from train_text_to_image.py's, its defaults apply.
"""
import argparse
import contextlib
import logging
import os

import numpy as np
from mindspore import Tensor, ops

from ldm.errors import UserError, refusals_first
from ldm.train import config as base
from ldm.train.checks import check_placeholder_paths
from ldm.train.loop import TrainRun, build_training_model, no_leftovers
from ldm.train.trainer import DiffusionObjective

_log = logging.getLogger("ldm.train")
TOOL = "train_controlnet.py"
SUFFIX = "_controlnet"                  # ckpt/sd-{N}_controlnet.ckpt
PARAM_PREFIX = "control_model."         # the trained parameters' names (resume file, logs)

CN_OPTIONS = {
    "controlnet_path": (str, "", "continue training this ControlNet (any file or folder controlnet_image2image.py "
                                 "--controlnet reads); empty = a new one: the base UNet's encoder copied, zero "
                                 "convolutions 0"),
    "controlnet_mode": (str, "canny", "MindONE: canny | segmentation | openpose, the kind of control images "
                                      "(MindONE picks its prompt.json layout by it; here the layout is read from the "
                                      "folder, so it is recorded only)"),
    "use_recompute": (base.optional_bool, None, "MindONE's name of recompute: UNet and ControlNet blocks recomputed "
                                                "in backward (unset = recompute's value)"),
    "detector": (str, "none", "none: the control images of the data layout | canny: the control image is the canny "
                              "edge map of each training image (after its crop and flip), made on the fly"),
    "canny_low": (float, 100.0, "detector canny: lower hysteresis threshold (OpenCV's rule, as "
                                "controlnet_image2image.py)"),
    "canny_high": (float, 200.0, "detector canny: upper threshold"),
    "canny_sigma": (float, 0.0, "detector canny: Gaussian blur sigma before the gradient (0 = none)"),
    "conditioning_image_column": (str, "", "diffusers: the metadata.jsonl key of the control image (default: "
                                           "conditioning_image, conditioning_image_file_name, control_file_name or "
                                           "control_image, the first a line has)"),
    "validation_control_images": (base.str_list, [], "the control image of each validation prompt (one for all or one "
                                                     "per prompt; a photo when detector is canny)"),
}
# MindONE's train_cldm.py defaults where they differ from train_text_to_image.py's (read 2026-12-06). Its
# ControlNetDataset drops captions with probability 0.5 (drop_rate, not a flag) and keeps every image (its
# filter_small_size / image_filter_size reach no code); its default model_config (v1-train-chinese.yaml) is the
# Chinese SD model, which its recipes replace by v1-train-cldm.yaml: that is the default here.
CN_DEFAULTS = dict(model_config="configs/v1-train-cldm.yaml", weight_decay=1e-6, seed=3407, warmup_steps=1000,
                   train_batch_size=10, end_learning_rate=1e-7, scheduler="cosine_decay", image_filter_size=256,
                   filter_small_size=False, drop_text_prob=0.5)
# keys of train_text_to_image.py without a meaning here (the base model is frozen; no LoRA adapters; every
# sample's control image changes with its crop, so there is no latent cache)
NOT_CN = ("train_text_encoder", "text_encoder_lr", "unet_lr", "cache_latents", "unet_initialize_random", "lora_alpha",
          "lora_scale", "conv_dim", "conv_alpha", "use_dora", "lora_rank_pattern")
# MindONE's ControlNet training YAML -> ours (the SD 1.5 network; the ControlNet's params are its control_stage_config)
MODEL_ALIASES = {"configs/v1-train-cldm.yaml": "configs/v1-controlnet-inference.yaml"}
CHOICES = dict(base.CHOICES, controlnet_mode=("canny", "segmentation", "openpose"), detector=("none", "canny"))


def options():
    """name -> (type, default, help) of train_controlnet.py."""
    table = {k: v for k, v in base.OPTIONS.items() if k not in NOT_CN}
    for name, default in CN_DEFAULTS.items():
        conv, _, text = table[name]
        table[name] = (conv, default, text)
    table["filter_small_size"] = (base.str2bool, False, "skip images whose shorter side is below image_filter_size "
                                  "(MindONE's ControlNet data keeps every image)")
    table["use_lora"] = (base.str2bool, False, "MindONE: LoRA; not supported for ControlNet training (the ControlNet "
                                               "trains whole): True is refused")
    table.update(CN_OPTIONS)
    return table


def build_parser():
    return base.build_parser(options(), description="Train a ControlNet on a frozen Stable Diffusion base model "
                             "(v or eps: the base model's objective; MindONE's train_cldm.py recipes and flags).",
                             recipe_help="training recipe YAML (configs/train/sd15_controlnet_*.yaml)")


def read_recipe(path):
    """A ControlNet recipe as a flat dict of converted values (unknown keys: one error line)."""
    return base.read_recipe(path, options(), CHOICES, TOOL)


def parse_config(argv=None):
    """Defaults <- recipe YAML <- flags; validated. Returns an argparse.Namespace."""
    values = base.resolve_model_paths(base.merge_settings(build_parser(), options(), CHOICES, TOOL, argv),
                                      MODEL_ALIASES)
    cfg = argparse.Namespace(**{k: base.OPTIONS[k][1] for k in NOT_CN}, **values)
    validate(cfg)
    cfg.jit = bool(cfg.jit) and cfg.mode == 0
    return cfg


def validate(cfg):
    """MindONE's keys merged into ours, then every check that needs no model (one line each)."""
    from ldm.run_checks import check_number
    check_placeholder_paths(cfg)
    if cfg.use_recompute is not None:
        if cfg.recompute is not None and cfg.recompute != cfg.use_recompute:
            raise UserError(f"use_recompute {cfg.use_recompute} and recompute {cfg.recompute} disagree: give one")
        cfg.recompute = cfg.use_recompute
    if cfg.use_lora:
        raise UserError("use_lora: ControlNet training trains the whole ControlNet (no LoRA adapters); set use_lora "
                        "False")
    if cfg.controlnet_path and not os.path.exists(cfg.controlnet_path):
        raise UserError(f"controlnet_path not found: {cfg.controlnet_path}")
    if cfg.detector == "canny":
        for name in ("canny_low", "canny_high"):
            check_number(name, getattr(cfg, name), 0.0)
        if cfg.canny_low > cfg.canny_high:
            raise UserError(f"canny_low {cfg.canny_low:g} is above canny_high {cfg.canny_high:g}")
        check_number("canny_sigma", cfg.canny_sigma, 0.0, 100.0)
    if cfg.model_config and os.path.isfile(cfg.model_config):
        check_objective_is_the_base(cfg)        # before base.validate's objective checks: the reason is the base
    base.validate(cfg)
    check_hint_encoder(cfg)
    if cfg.validation_steps and cfg.validation_prompts:
        validation_control_maps(cfg)            # read (and checked) now; again at the first validation


def check_objective_is_the_base(cfg):
    """The frozen UNet predicts what its config says, on its schedule: a ControlNet trains with that objective."""
    from ldm.diffusion.spec import resolve_spec
    spec = resolve_spec(cfg.model_config)
    if cfg.prediction_type and cfg.prediction_type != spec.prediction_type:
        raise UserError(f"prediction_type {cfg.prediction_type}: the base UNet is frozen and predicts "
                        f"{spec.prediction_type} (its model config's); a ControlNet trains with the base model's "
                        "objective: drop prediction_type")
    if cfg.rescale_zero_snr is not None and bool(cfg.rescale_zero_snr) != spec.rescale_zero_snr:
        raise UserError(f"rescale_zero_snr {cfg.rescale_zero_snr}: the frozen base model's schedule has "
                        f"rescale_zero_snr {spec.rescale_zero_snr}; a ControlNet trains on the base model's schedule: "
                        "drop rescale_zero_snr")


def new_controlnet_params(model_config):
    """The architecture of a new ControlNet for the base of ``model_config`` (a dict): the UNet's encoder, with the
    hint encoder of the YAML's control_stage_config (hint_channels, hint_block_channels) when it has one."""
    from ldm.convert.controlnet import yaml_controlnet_params
    from ldm.models.controlnet import HINT_BLOCK_CHANNELS, controlnet_params_from_unet
    from ldm.util import part_params
    yaml = yaml_controlnet_params(model_config) or {}
    return controlnet_params_from_unet(part_params(model_config, "unet_config"), yaml.get("hint_channels", 3),
                                       yaml.get("hint_block_channels", HINT_BLOCK_CHANNELS))


def check_hint_encoder(cfg, params=None):
    """The hint encoder must downsample the control image to the latent size (by the VAE's factor)."""
    from ldm.run_checks import geometry_from_config
    from ldm.util import load_config
    config = load_config(cfg.model_config)
    if params is None:
        if cfg.controlnet_path:
            return                          # checked once the ControlNet is read (it says its own sizes)
        params = new_controlnet_params(config)
    widths = list(params.get("hint_block_channels") or [])
    factor, vae = 2 ** (len(widths) - 1), geometry_from_config(config).vae_factor
    if factor != vae:
        raise UserError(f"the ControlNet's hint encoder downsamples by {factor} (hint_block_channels {widths}), the "
                        f"VAE by {vae}: give the model config a control_stage_config whose hint_block_channels has "
                        f"{int(np.log2(vae)) + 1} widths (e.g. configs/tiny-shapes-controlnet.yaml)")


def validation_control_maps(cfg):
    """uint8 (len(validation_prompts), image_size, image_size, 3): the control image of each validation prompt,
    fitted to the training size and run through the detector."""
    from ldm.control_inputs import detect, fit_to_size, read_control_image
    paths = list(cfg.validation_control_images)
    prompts = list(cfg.validation_prompts)
    if not paths:
        raise UserError("validation_prompts need validation_control_images (the control image of each prompt, or "
                        "one for all)")
    if len(paths) not in (1, len(prompts)):
        raise UserError(f"{len(paths)} validation_control_images for {len(prompts)} validation_prompts: give one, "
                        "or one per prompt")
    maps = []
    for path in paths:
        image = read_control_image(path, "validation_control_images")
        image, _ = fit_to_size(image, cfg.image_size, cfg.image_size, f"validation control image {path}")
        maps.append(detect(image, cfg.detector, cfg.canny_low, cfg.canny_high, cfg.canny_sigma))
    maps = maps * len(prompts) if len(maps) == 1 else maps
    return np.stack(maps)


def control_options(cfg):
    from ldm.data.controlnet_dataset import ControlOptions
    return ControlOptions(cfg.detector, cfg.canny_low, cfg.canny_high, cfg.canny_sigma, cfg.conditioning_image_column)


class ControlNetObjective(DiffusionObjective):
    """DiffusionObjective whose model output is the base UNet with the ControlNet's residuals:
    ``unet(x_t, t, c, control=controlnet(x_t, t, c, hint))``; the hint (N, 3, H, W) in [0, 1] is the objective's
    extra input (after ObjectiveInputs)."""

    def __init__(self, model, controlnet, prediction_type, encode_text=False, loss_type="l2"):
        super().__init__(model, prediction_type, encode_text, loss_type)
        self.controlnet = controlnet
        self.unet = model.diffusion_model

    def denoise(self, x_t, t, context, extra=None):
        return self.unet(x_t, t, context, self.controlnet(x_t, t, context, extra))


class ControlNetRun(TrainRun):
    """TrainRun whose data, model, trainable set, objective and saved weights are ControlNet training's (see the
    module docstring). ``make_sampler(model, config, controlnet)``: builds the validation pipeline (a
    ControlNetPipeline; training never imports the pipeline, train_controlnet.py hands it in)."""

    def __init__(self, cfg, make_sampler=None):
        self.make_control_sampler = make_sampler
        super().__init__(cfg, self.validation_sampler if make_sampler is not None else None)

    # ---- data
    def make_dataset(self, folders, for_validation=False):
        from ldm.data.controlnet_dataset import ControlNetDataset
        from ldm.train import data_options
        cfg = self.cfg
        flip = cfg.random_crop if cfg.random_flip is None else cfg.random_flip   # MindONE: crop comes with flip
        return ControlNetDataset(folders, cfg.image_size, control_options(cfg), cfg.random_crop and not for_validation,
                                 flip and not for_validation, cfg.image_filter_size or cfg.min_image_size,
                                 0.0 if for_validation else cfg.drop_text_prob, cfg.seed,
                                 filter_small=cfg.filter_small_size,
                                 replace_skipped_images=cfg.replace_small_images and not for_validation,
                                 source_options=data_options.source_options(cfg),
                                 caption_options=data_options.caption_options(cfg, for_validation=for_validation),
                                 buckets=self.bucket_settings())

    def build_dataset(self):
        return self.make_dataset(self.cfg.data_path)

    def build_validation_set(self):
        """validation_split as train_text_to_image.py (a subset keeps its control images); a validation_data_path
        folder is read with the ControlNet layouts."""
        cfg = self.cfg
        if not cfg.validation_data_path:
            return super().build_validation_set()
        val = self.make_dataset([cfg.validation_data_path], for_validation=True)
        if self.is_main:
            _log.info("validation loss on %d images (%s)", len(val), cfg.validation_data_path)
        return val

    def extra_inputs(self, batch):
        """The hint of every row; the validation loss's host batches carry none: their rows' hints (centre crop)."""
        hint = batch.get("hint")
        if hint is None:
            size = (batch["image"].shape[3], batch["image"].shape[2])
            hint = np.stack([self.val_dataset.hint_of(int(i), size) for i in batch["index"]])
        return (Tensor(np.ascontiguousarray(hint, dtype=np.float32)),)

    # ---- model
    def build_model(self):
        from ldm.models.controlnet import build_controlnet_from_unet
        from ldm.train.inpaint import is_inpainting
        from ldm.util import model_params, part_params
        cfg = self.cfg
        model, config = build_training_model(cfg)
        if is_inpainting(model):
            raise UserError("an inpainting base model (UNet with mask channels) is not supported for ControlNet "
                            "training: use a text-to-image base")
        if cfg.controlnet_path:
            from ldm.convert.controlnet import load_controlnet
            net = load_controlnet(cfg.controlnet_path, config)         # another base: one line
            params = dict(net.source_params)
            check_hint_encoder(cfg, params)
            if self.is_main:
                _log.info("ControlNet from %s (%s layout)", cfg.controlnet_path, net.source_layout)
        else:
            params = new_controlnet_params(config)
            net = build_controlnet_from_unet(model.diffusion_model, part_params(config, "unet_config"),
                                             params["hint_channels"], params["hint_block_channels"])
            if self.is_main:
                _log.info("new ControlNet: the base UNet's encoder copied, zero convolutions 0 (hint encoder %s)",
                          params["hint_block_channels"])
        net.set_train(False)
        net.update_parameters_name(PARAM_PREFIX)
        self.controlnet, self.controlnet_params = net, params
        model_params(config)["control_stage_config"] = {"target": "ldm.models.controlnet.ControlNetModel",
                                                        "params": params}
        return model, config

    def select_trainable(self):
        for p in self.model.get_parameters():
            p.requires_grad = False
        params = list(self.controlnet.get_parameters())
        for p in params:
            p.requires_grad = True
        return params

    def encodes_text(self):
        return False

    def build_objective(self, encode_text):
        from ldm.train.precision import unet_compute_dtype
        self.controlnet.set_compute_dtype(unet_compute_dtype(self.model.diffusion_model))   # amp_level as the UNet
        return ControlNetObjective(self.model, self.controlnet, self.prediction_type, encode_text,
                                   getattr(self.cfg, "loss_type", "l2"))

    def compile_every_size(self):
        """Each bucket size compiles its own step: the shared dynamic-size step is checked for the UNet's attention
        only (ldm.train.loop.size_free_attention), not the ControlNet's."""
        return False

    # ---- outputs
    def save_weights(self, tag):
        """ckpt/sd-{tag}_controlnet.ckpt (the EMA weights when use_ema); the last ckpt_max_keep are kept."""
        from ldm.convert.controlnet import save_controlnet
        path = self.ckpts.model_path(tag, suffix=SUFFIX)
        with (self.ema.swapped() if self.ema is not None else contextlib.nullcontext()):
            save_controlnet(self.controlnet, path)
        self.ckpts._prune(suffix=SUFFIX)
        return path

    def validation_sampler(self, model, config):
        """``fn(prompts, **generate options) -> uint8 images`` drawing with a copy of the ControlNet (the pipeline
        renames the parameters of the ControlNets it holds), refreshed from the trained weights at every call."""
        from mindspore.nn.utils import no_init_parameters

        from ldm.convert.checkpoint import load_params_into
        from ldm.models.controlnet import ControlNetModel
        with no_init_parameters():
            copy = ControlNetModel(**self.controlnet_params)
        load_params_into(copy, {p.name: p.asnumpy() for p in self.controlnet.get_parameters()}, prefix=PARAM_PREFIX,
                         source="the trained ControlNet")
        pairs = list(zip(copy.get_parameters(), self.controlnet.get_parameters()))
        pipe = self.make_control_sampler(model, config, copy)
        maps = validation_control_maps(self.cfg)

        def sample(prompts, **options):
            for dst, src in pairs:          # in place: the compiled graphs keep the parameters' memory
                ops.assign(dst, src)
            return pipe(prompts, control_image=maps, **options)
        return sample


def train_controlnet(cfg, make_sampler=None):
    """Run a parsed ControlNet recipe (:func:`parse_config`). Returns the summary dict of TrainRun.run.
    ``make_sampler(model, config, controlnet)`` -> a ControlNetPipeline-like callable (validation images only)."""
    with no_leftovers(cfg.output_path):
        with refusals_first():          # notices of the start only once nothing refused the run
            run = ControlNetRun(cfg, make_sampler)
        return run.run()


__all__ = ["CN_OPTIONS", "ControlNetObjective", "ControlNetRun", "options", "parse_config", "read_recipe",
           "train_controlnet"]
