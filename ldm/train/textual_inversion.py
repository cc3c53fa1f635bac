"""Textual inversion (MindONE's ``train_textual_inversion.py``): learn ``num_vectors`` new token
embeddings for a concept from a folder of images; everything else in the model stays frozen.

This is the ordinary training run (:class:`ldm.train.loop.TrainRun`: objective, compiled step,
optimiser, accumulation, clipping, resume, logs) with four hooks changed: the data are templated
captions (ldm.data.ti_dataset), the model gains the placeholder tokens, the only trainable Parameter
is their ``[num_vectors, width]`` block (ldm.models.textual_inversion), and the saved weights are those
rows in MindONE's ``*_ti.ckpt`` and diffusers' ``learned_embeds.safetensors`` formats.

MindONE's recipe keys are accepted unchanged (``configs/train/train_config_textual_inversion_v*.yaml``);
where its TI script's defaults differ from train_text_to_image.py's, its defaults apply. Counting, as
MindONE's loop does: ``max_steps`` and ``ckpt_save_interval`` count data batches (its ``i_step``), so
with ``gradient_accumulation_steps`` k the run makes ``max_steps // k`` optimiser updates and the file
of batch ``i`` is ``weights/SDv{version}_textual_inversion_{i}_ti.ckpt``; ``milestones`` count
optimiser updates (its LR list is indexed by the optimiser's step).
"""
import argparse
import bisect
import logging
import os

import numpy as np

from ldm.errors import UserError, refusals_first
from ldm.train.data_options import CAPTION_OPTIONS
from ldm.models import textual_inversion as ti
from ldm.train import config as base
from ldm.train.checks import check_placeholder_paths
from ldm.train.loop import TrainRun, build_training_model, no_leftovers

_log = logging.getLogger("ldm.train")


def int_list(value):
    return [base.integer(v) for v in base.str_list(value)]


def ti_scheduler_name(value):
    """Our schedulers plus MindONE's multi_step_decay (with milestones and decay_rate, as its TI script
    passes them)."""
    name = str(value).strip()
    return name if name == "multi_step_decay" else base.scheduler_name(name)


TI_OPTIONS = {
    "train_data_dir": (str, "", "MindONE: folder of images of the concept (no captions needed)"),
    "placeholder_token": (str, "", "MindONE: the new word for the concept, e.g. <cat-toy> (must not be a "
                                   "vocabulary token)"),
    "initializer_token": (str, "", "MindONE: one vocabulary token whose embedding starts every vector "
                                   "(empty = random N(0, 0.01^2))"),
    "learnable_property": (str, "object", "MindONE: object | style: which caption templates are used"),
    "num_vectors": (base.integer, 1, "MindONE: vectors for the concept (tokens <tok>, <tok>_1, ...)"),
    "train_data_repeats": (base.integer, 1, "MindONE: each image appears this many times per epoch"),
    "template_file": (str, "", "MindONE: text file of caption templates, one with {} per line (empty = "
                               "the built-in object or style templates)"),
    "scale_lr": (base.str2bool, False, "MindONE: multiply start_learning_rate by accumulation steps x "
                                       "ranks x batch size"),
    "milestones": (int_list, [200, 400, 800, 1600, 3200], "MindONE: optimiser steps at which "
                                                          "multi_step_decay multiplies the rate by decay_rate"),
    "decay_rate": (float, 0.9, "MindONE: multi_step_decay factor"),
    "overflow_still_update": (base.str2bool, True, "MindONE: apply the update of an fp16 step whose gradients "
                                                   "overflowed (False: skip it; sets drop_overflow_update)"),
    "sample_batch_size": (base.integer, 4, "MindONE: accepted, unused (its script samples nothing)"),
    "jit_level": (str, "O2", "MindONE: graph kernel level O0 | O1 | O2; recorded only (CPU compiles with ms.jit)"),
    "epochs": (base.integer, 10, "MindONE: accepted; max_steps decides the length (MindONE's recipes always set it)"),
}
# MindONE's train_textual_inversion.py defaults where they differ from train_text_to_image.py's
TI_DEFAULTS = dict(model_config="configs/v1-train-textual-inversion.yaml", random_crop=True, image_filter_size=256,
                   gradient_accumulation_steps=4, start_learning_rate=5e-5, end_learning_rate=1e-7,
                   scheduler="multi_step_decay", seed=3407, max_steps=6000, init_loss_scale=2048.0,
                   scale_window=200, ckpt_save_interval=600, version="1.5", drop_text_prob=0.0)
# keys of train_text_to_image.py that have no meaning here (the data and the trained part are fixed)
NOT_TI = ("data_path", "use_lora", "lora_rank", "lora_alpha", "lora_ft_unet", "lora_ft_text_encoder", "lora_scale",
          "lora_fp16", "conv_dim", "conv_alpha", "use_dora", "lora_rank_pattern", "train_text_encoder",
          "drop_text_prob", "cache_latents", "step_mode",
          "drop_overflow_update", "unet_lr", "text_encoder_lr") + tuple(CAPTION_OPTIONS)
# MindONE's TI model YAMLs -> ours (same networks; the TI part is built here, not by the YAML)
MODEL_ALIASES = {"configs/v1-train-textual-inversion.yaml": "configs/v1-train.yaml",
                 "configs/v2-train-textual-inversion.yaml": "configs/v2-train.yaml"}


def options():
    """name -> (type, default, help) of train_textual_inversion.py."""
    table = {k: v for k, v in base.OPTIONS.items() if k not in NOT_TI}
    for name, default in TI_DEFAULTS.items():
        if name in table:
            conv, _, text = table[name]
            table[name] = (ti_scheduler_name if name == "scheduler" else conv, default, text)
    table["scheduler"] = (ti_scheduler_name, "multi_step_decay",
                          "constant | cosine_decay | polynomial_decay | multi_step_decay (milestones, decay_rate)")
    table.update(TI_OPTIONS)
    return table


CHOICES = dict(base.CHOICES, learnable_property=("object", "style"),
               scheduler=base.CHOICES["scheduler"] + ("multi_step_decay",), jit_level=("O0", "O1", "O2"))


TOOL = "train_textual_inversion.py"


def build_parser():
    return base.build_parser(options(), description="Textual inversion: learn new token embeddings for a concept "
                             "from a folder of images (MindONE's recipes and flags).",
                             recipe_help="training recipe YAML (configs/train/train_config_textual_inversion_v*.yaml)")


def read_recipe(path):
    """A textual-inversion recipe as a flat dict of converted values (unknown keys: one error line)."""
    return base.read_recipe(path, options(), CHOICES, TOOL)


def parse_config(argv=None):
    """Defaults <- recipe YAML <- flags, then MindONE's TI counting (see the module docstring)."""
    values = base.resolve_model_paths(base.merge_settings(build_parser(), options(), CHOICES, TOOL, argv),
                                      MODEL_ALIASES)
    cfg = argparse.Namespace(**{k: base.OPTIONS[k][1] for k in NOT_TI}, **values)
    validate(cfg)
    accum = cfg.gradient_accumulation_steps
    cfg.batches_per_update = accum
    cfg.mindone_max_steps, cfg.mindone_ckpt_save_interval = cfg.max_steps, cfg.ckpt_save_interval
    cfg.max_steps = cfg.max_steps // accum
    cfg.ckpt_save_interval = max(cfg.ckpt_save_interval // accum, 1)
    cfg.epochs, cfg.step_mode = 0, True
    cfg.drop_overflow_update = not cfg.overflow_still_update
    cfg.jit = bool(cfg.jit) and cfg.mode == 0
    return cfg


def validate(cfg):
    check_placeholder_paths(cfg)                # before anything is read or created
    if not cfg.train_data_dir:
        raise UserError("train_data_dir is required (a folder of images of the concept)")
    if not os.path.isdir(cfg.train_data_dir):
        raise UserError(f"train_data_dir not found: {cfg.train_data_dir}")
    ti.placeholder_tokens(cfg.placeholder_token, cfg.num_vectors)   # empty token / num_vectors < 1
    if cfg.max_steps < cfg.gradient_accumulation_steps:
        raise UserError(f"max_steps {cfg.max_steps} counts data batches (as MindONE's) and must be at least "
                        f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) for one update")
    if cfg.use_ema:
        raise UserError("use_ema is not supported for textual inversion (the trained rows are the result)")
    if cfg.train_data_repeats < 1:
        raise UserError(f"train_data_repeats must be >= 1, got {cfg.train_data_repeats}")
    if cfg.template_file:
        from ldm.data.ti_dataset import read_template_file
        read_template_file(cfg.template_file)
    if any(b <= a for a, b in zip(cfg.milestones, cfg.milestones[1:])):
        raise UserError(f"milestones must increase, got {cfg.milestones}")
    cfg.data_path = [cfg.train_data_dir]
    base.validate(cfg)


def multi_step_schedule(start_lr, total_steps, warmup_steps, milestones, decay_rate):
    """MindONE's warm-up then ``lr * decay_rate ** bisect_right(milestones, i)`` (i counted after the
    warm-up, as its create_scheduler concatenates the two phases)."""
    lrs = np.empty(max(int(total_steps), 1), dtype=np.float64)
    for step in range(len(lrs)):
        if step < warmup_steps:
            lrs[step] = start_lr * (step + 1) / warmup_steps
        else:
            lrs[step] = start_lr * decay_rate ** bisect.bisect_right(sorted(milestones), step - warmup_steps)
    return lrs.astype(np.float32)


class TextualInversionRun(TrainRun):
    """TrainRun whose data, model, trainable set, LR schedule and saved weights are textual inversion's."""

    @property
    def tokens(self):
        return ti.placeholder_tokens(self.cfg.placeholder_token, self.cfg.num_vectors)

    def build_dataset(self):
        from ldm.data.ti_dataset import TextualInversionDataset, read_template_file
        cfg = self.cfg
        flip = cfg.random_crop if cfg.random_flip is None else cfg.random_flip
        templates = read_template_file(cfg.template_file) if cfg.template_file else None
        return TextualInversionDataset(cfg.train_data_dir, " ".join(self.tokens), cfg.image_size,
                                       cfg.learnable_property, templates, cfg.train_data_repeats, cfg.random_crop,
                                       flip, cfg.image_filter_size or cfg.min_image_size, cfg.seed,
                                       filter_small=cfg.filter_small_size,
                                       replace_skipped_images=cfg.replace_small_images, buckets=self.bucket_settings())

    def build_model(self):
        cfg = self.cfg
        model, config = build_training_model(cfg)
        width = model.cond_stage_model.transformer.embedding_table.shape[1]
        if cfg.initializer_token:
            rows = np.tile(ti.token_embedding(model, cfg.initializer_token), (cfg.num_vectors, 1))
        else:   # MindONE's randn * 0.01, from the run's seed
            rows = np.random.default_rng([cfg.seed, 0x71]).standard_normal((cfg.num_vectors, width)) * 0.01
        ti.add_placeholder_tokens(model, cfg.placeholder_token, rows)
        return model, config

    def select_trainable(self):
        for p in self.model.get_parameters():
            p.requires_grad = False
        rows = ti.added_embeddings(self.model)
        rows.requires_grad = True
        return [rows]

    def encodes_text(self):
        return True

    def build_lr_schedule(self):
        cfg = self.cfg
        lr = cfg.start_learning_rate
        if cfg.scale_lr:
            lr *= cfg.gradient_accumulation_steps * self.world * cfg.train_batch_size
            if self.is_main:
                _log.info("scale_lr: effective start_learning_rate %g", lr)
        if cfg.scheduler == "multi_step_decay":
            return multi_step_schedule(lr, self.total_steps, cfg.warmup_steps, cfg.milestones, cfg.decay_rate)
        from ldm.train.lr_schedule import build_lr_schedule
        return build_lr_schedule(cfg.scheduler, lr, cfg.end_learning_rate, self.total_steps, cfg.warmup_steps,
                                 cfg.decay_steps, num_cycles=cfg.lr_scheduler_num_cycles)

    def weights_folder(self):
        return os.path.join(self.cfg.output_path, "weights")

    def save_weights(self, tag):
        """MindONE's ``weights/SDv{version}_textual_inversion_{batch}_ti.ckpt`` plus diffusers'
        ``learned_embeds-steps-{batch}.safetensors`` and ``learned_embeds.safetensors`` (the latest)."""
        cfg = self.cfg
        batch = int(tag) * cfg.batches_per_update
        rows = ti.added_embeddings(self.model).asnumpy()
        folder = self.weights_folder()
        path = os.path.join(folder, f"SDv{cfg.version}_textual_inversion_{batch}_ti.ckpt")
        ti.save_mindone(path, rows, cfg.placeholder_token)
        ti.save_learned_embeds(os.path.join(folder, f"learned_embeds-steps-{batch}.safetensors"), rows,
                               cfg.placeholder_token)
        ti.save_learned_embeds(os.path.join(folder, "learned_embeds.safetensors"), rows, cfg.placeholder_token)
        return path


def train_textual_inversion(cfg, make_sampler=None):
    """Run a parsed TI recipe (:func:`parse_config`). Returns the summary dict of TrainRun.run.
    ``make_sampler``: as for :class:`TrainRun` (validation images; the model's tokenizer expands the
    placeholder in their prompts)."""
    with no_leftovers(cfg.output_path):
        with refusals_first():          # notices of the start only once nothing refused the run
            run = TextualInversionRun(cfg, make_sampler)
        return run.run()
