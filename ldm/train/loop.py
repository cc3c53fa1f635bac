"""The training run: build model/data/optimiser from a parsed recipe, resume, loop, save, log.

Randomness is keyed per sample (see ldm.data.dataset), the data order per epoch by the seed, and the
state saved in ``train_resume.ckpt`` is everything the loop carries, so a resumed run reproduces an
uninterrupted one and N ranks reproduce one process with an N-times larger batch.
"""
import contextlib
import glob
import logging
import math
import os
import shutil
import tempfile
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ldm.data.dataset import ImageCaptionDataset, batch_plan, make_batch
from ldm.diffusion.spec import spec_record, with_spec
from ldm.errors import UserError, refusals_first
from ldm.models import lora as lora_lib
from ldm.train.adapters import inject_adapters
from ldm.train.checkpoint import CheckpointManager, load_resume, resume_file
from ldm.train.ema import EMA
from ldm.train.inpaint import inpaint_conditioning
from ldm.train import mindone_flags
from ldm.train.config import log_level_value
from ldm.train import data_options
from ldm.train.logging import MetricsLog, log_file, log_loss_line, timestep_bin_losses
from ldm.train.tensorboard_log import open_logger
from ldm.train.lr_schedule import build_lr_schedule
from ldm.train.optim import backward_order, optimizer_for_run
from ldm.train.precision import apply_precision
from ldm.train.objective_options import NoiseSettings, compose_noise, latent_channel_means, timestep_range
from ldm.train.trainer import DiffusionObjective, ObjectiveInputs, TrainStep, loss_options, timestep_terms
from ldm.train.validation import check_validation, write_validation_images
from ldm.train.validation_loss import ValidationLoss, split_validation
from ldm.util import load_config, model_params, model_section, part_params

_log = logging.getLogger("ldm.train")


class TrainingDiverged(UserError):
    """The loss or the weights became NaN/inf in a step no loss scaler skipped."""


def nonfinite_count(params):
    """How many of ``params`` hold a NaN or inf (float tensors only)."""
    bad = 0
    for p in params:
        arr = p.asnumpy()
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad += 1
    return bad


# ---------------------------------------------------------------- runtime
def setup_runtime(cfg):
    """Device, mode and (with use_parallel) the communication group. Returns (rank, world_size)."""
    if cfg.device_target:
        try:
            with quiet_mindspore_log():             # its own [ERROR] lines would precede ours
                ms.set_device(cfg.device_target)
        except (RuntimeError, ValueError) as exc:   # a device this MindSpore build or machine lacks
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise UserError(f"device_target {cfg.device_target} is not available here: {first}") from exc
    ms.set_context(mode=ms.PYNATIVE_MODE)  # steps are compiled one by one with ms.jit
    rank, world = 0, 1
    if cfg.use_parallel:
        from mindspore.communication import get_group_size, get_rank, init
        try:
            init()
        except RuntimeError as exc:
            raise UserError("use_parallel needs a launcher (msrun or mpirun via scripts/run_train_distributed.sh): "
                            f"{str(exc).splitlines()[0]}") from exc
        rank, world = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
    ms.set_seed(cfg.seed)  # identical initial weights on every rank
    return rank, world


@contextlib.contextmanager
def quiet_mindspore_log():
    """Silence MindSpore's Python logger (``ME.mindspore.log.<pid>``) for the block."""
    from mindspore import log as ms_log
    logger = ms_log._get_logger()
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def device_is_cpu():
    return ms.get_context("device_target") == "CPU"


def sink_notice(on_cpu):
    """The one line a set ``dataset_sink_mode`` logs. MindSpore 2.8 sinks a dataset only on Ascend/GPU:
    on CPU ``ms.data_sink`` raises, ``Model.train`` falls back to host feeding and the queue kernel
    (InitDataSetQueue) is missing (scripts/probe_data_sink.py, docs/data_sink.md)."""
    why = ("MindSpore cannot sink a dataset on CPU (no InitDataSetQueue/GetNext kernel; ms.data_sink refuses CPU)"
           if on_cpu else "this trainer has no sink path yet (MindSpore sinks only on Ascend/GPU, which were not "
                          "available to build it)")
    return f"dataset_sink_mode: {why}; every step is fed from the host"


# ---------------------------------------------------------------- model
def training_model_config(cfg):
    """The model YAML with the recipe's recompute switch (unset = the YAML's
    ``unet_config.params.use_checkpoint``) and the attention keys (ours, MindONE's enable_flash_attention) applied."""
    config = mindone_flags.apply_attention_keys(load_config(cfg.model_config), cfg)
    if cfg.recompute is None:
        return config
    unet = model_params(config).get("unet_config")
    if not isinstance(unet, dict):
        if cfg.recompute:
            raise UserError(f"recompute needs a model config with unet_config, got {cfg.model_config}")
        return config
    unet.setdefault("params", {})["use_checkpoint"] = bool(cfg.recompute)
    unet["params"].pop("use_recompute", None)
    return config


def build_training_model(cfg):
    """(model, config): the model of the YAML with the recipe's spec overrides (prediction_type,
    rescale_zero_snr), weights from pretrained_model_path (without the UNet's with
    unet_initialize_random), then the text encoder's from custom_text_encoder when set. Other
    ``target`` classes (test stand-ins) start from random weights."""
    from ldm.convert.checkpoint import load_model
    from ldm.models.latent_diffusion import build_model
    config = training_model_config(cfg)
    overrides = dict(prediction_type=cfg.prediction_type or None, rescale_zero_snr=cfg.rescale_zero_snr)
    if not cfg.pretrained_model_path:
        model = build_model(config, **overrides)
    else:
        target = str(model_section(config).get("target", "LatentDiffusion"))
        if not target.endswith("LatentDiffusion"):
            raise UserError(f"pretrained_model_path needs a LatentDiffusion model config, got target {target!r}")
        if cfg.unet_initialize_random:   # MindONE: the pretrained weights without model.diffusion_model.*
            model = mindone_flags.load_without_unet(build_model(config, **overrides), config,
                                                    cfg.pretrained_model_path)
        else:
            # the starting weights' recorded spec does not bind this run: its objective is the recipe's
            model = load_model(config, cfg.pretrained_model_path, check_spec=False, **overrides)
    if cfg.custom_text_encoder:
        mindone_flags.load_custom_text_encoder(model, config, cfg.custom_text_encoder)
    return model, config


def latent_shape(model, config, image_size):
    """(C, h, w) of the VAE latents at ``image_size``, from the config (or one dummy encode)."""
    first = part_params(config, "first_stage_config")
    dd = first.get("ddconfig")
    if dd and "ch_mult" in dd and "embed_dim" in first:
        side = image_size // 2 ** (len(dd["ch_mult"]) - 1)
        return (int(first["embed_dim"]), side, side)
    mean, _ = model.encode_first_stage(Tensor(np.zeros((1, 3, image_size, image_size), np.float32)))
    return tuple(int(d) for d in mean.shape[1:])


def select_trainable(cfg, model):
    """Freeze everything, then unfreeze what this recipe trains. Returns the list of Parameters."""
    for p in model.get_parameters():
        p.requires_grad = False
    if cfg.use_lora:
        targets = []
        if cfg.lora_ft_unet:
            targets.append(model.diffusion_model)
        if cfg.lora_ft_text_encoder:
            targets.append(model.cond_stage_model)
        params = inject_adapters(cfg, model, targets)     # conv_dim, use_dora, lora_rank_pattern too
        if cfg.lora_fp16:
            count = mindone_flags.set_lora_compute_dtype(model, ms.float16)
            _log.info("lora_fp16: %d LoRA layers compute in fp16 (weights fp32)", count)
        return params
    params = list(model.diffusion_model.get_parameters())
    if cfg.train_text_encoder:
        params += list(model.cond_stage_model.get_parameters())
    for p in params:
        p.requires_grad = True
    return params


def size_free_attention(model, rows, positions):
    """(True, "") when every attention core of ``model`` takes the same path at every size up to
    ``positions`` latent tokens (standard, or auto that stays standard: no flash kernel in use and the
    largest call's fp32 scores within the chunk budget); those auto cores are then fixed to standard,
    so a graph traced with dynamic sizes has no size-dependent branch. Else (False, why)."""
    from ldm.models.attention_ops import CHUNK_BUDGET_BYTES, attention_cells, scores_bytes
    cells = attention_cells(model)
    for cell in cells:
        if cell.mode == "standard":
            continue
        if cell.mode != "auto" or cell.flash is not None:
            return False, f"attention {cell.mode}{' (flash kernel)' if cell.flash is not None else ''} decides by size"
        if scores_bytes(rows, cell.heads, positions, positions) > CHUNK_BUDGET_BYTES:
            return False, "the largest bucket's attention scores need chunks"
    for cell in cells:
        cell.mode = "standard"
    return True, ""


# ---------------------------------------------------------------- the run
class TrainRun:
    """One training run of a parsed recipe. ``make_sampler(model, config)``: builds the function that
    draws validation images (``fn(prompts, **generate_options) -> uint8 images``); training does not
    import the pipeline, the caller hands it in (train_text_to_image.py passes Text2ImagePipeline)."""

    def __init__(self, cfg, make_sampler=None):
        self.cfg = cfg
        logging.getLogger("ldm").setLevel(log_level_value(cfg.log_level))
        self.rank, self.world = setup_runtime(cfg)
        self.is_main = self.rank == 0
        if self.is_main:
            for line in mindone_flags.notices(cfg, device_is_cpu()):
                _log.warning(line)
        if cfg.profile:
            if self.is_main:
                _log.info("profile: training cut to %d epochs as MindONE does", mindone_flags.PROFILE_EPOCHS)
            cfg.epochs = mindone_flags.PROFILE_EPOCHS
        self.dataset = self.build_dataset()
        self.val_dataset = self.build_validation_set()
        self.model, model_config = self.build_model()
        self.model.set_train(False)  # no dropout: training here is deterministic given the seed
        self.spec = self.model.spec          # what this run trains for; recorded in every checkpoint
        self.schedule = self.spec.schedule
        self.prediction_type = self.spec.prediction_type
        self.model_config = with_spec(model_config, self.spec)
        check_validation(cfg, self.spec)
        draws_images = bool(cfg.validation_steps and cfg.validation_prompts)
        if draws_images and make_sampler is None:
            raise UserError("validation_prompts need a sampling function: call train(cfg, make_sampler=...) "
                            "(train_text_to_image.py passes the text-to-image pipeline)")
        self.sample_images = make_sampler(self.model, self.model_config) if draws_images else None
        self.trainable = backward_order(self.select_trainable())
        self.scaler = mindone_flags.replace_scaler(cfg, apply_precision(cfg, self.model))
        self.latent_shape = latent_shape(self.model, self.model_config, cfg.image_size)
        self.plan = batch_plan(self.dataset, cfg.train_batch_size, self.world, cfg.seed)
        self.micro_per_epoch = self.plan.batches_per_epoch
        if self.micro_per_epoch < cfg.gradient_accumulation_steps:
            raise UserError(f"{len(self.dataset)} usable images are fewer than one optimiser step needs "
                            f"(batch {cfg.train_batch_size} x {self.world} ranks x "
                            f"{cfg.gradient_accumulation_steps} accumulation steps)")
        self.steps_per_epoch = self.micro_per_epoch // cfg.gradient_accumulation_steps
        self.total_steps = self.steps_per_epoch * cfg.epochs if cfg.epochs > 0 else cfg.max_steps
        if cfg.max_steps > 0:
            self.total_steps = min(self.total_steps, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps
        self.lrs = self.build_lr_schedule()
        self.optimizer = optimizer_for_run(cfg, self.trainable, self.model, _log if self.is_main else None)
        self.ema = EMA(self.trainable, cfg.ema_decay) if cfg.use_ema else None
        reducer = nn.DistributedGradReducer(self.trainable, mean=True, degree=self.world) \
            if self.world > 1 else None
        encode_text = self.encodes_text()
        self.every_size = self.compile_every_size()
        self.objective = self.build_objective(encode_text)
        # an inpainting UNet also takes [mask, masked-image latents] (ldm.train.inpaint); None for any other
        self.inpaint = inpaint_conditioning(self.model, cfg)
        self.cache = None
        if cfg.cache_latents:
            from ldm.data.latent_cache import LatentCache
            captions_vary = bool(getattr(self.dataset, "caption_options", None)
                                 and self.dataset.caption_options.active())
            self.cache = LatentCache(self.model, self.dataset, self.latent_shape_of, encode_text or captions_vary,
                                     show_progress=cfg.show_progress and self.is_main)
        self.step_fn = TrainStep(self.model, self.objective, self.trainable, self.optimizer, self.ema, reducer,
                                 self.scaler, cfg.clip_grad, cfg.max_grad_norm, cfg.drop_overflow_update,
                                 cfg.gradient_accumulation_steps, use_cached_latents=self.cache is not None,
                                 jit=cfg.jit, every_size=self.every_size)
        self.global_step = 0
        self.last_good = None
        self.resume()      # before anything is written: a refused resume file leaves the output folder as it was
        self.ckpts = CheckpointManager(cfg.output_path, cfg.ckpt_max_keep)
        if self.is_main:
            self.ckpts.save_model_config(self.model_config)
            mindone_flags.write_args_yaml(cfg)
        self.metrics = MetricsLog(cfg.output_path, resume_step=self.global_step if cfg.resume else None,
                                  num_train_timesteps=self.schedule.num_train_timesteps) if self.is_main else None
        self.board = open_logger(cfg.log_with, cfg.output_path) if self.is_main else None
        self.validation = ValidationLoss(self, self.val_dataset) if self.val_dataset is not None else None
        self.compiled_sizes = set()

    # ---- what a recipe builds (hooks: ldm.train.textual_inversion overrides them)
    def build_dataset(self):
        cfg = self.cfg
        flip = cfg.random_crop if cfg.random_flip is None else cfg.random_flip  # MindONE: crop comes with flip
        return ImageCaptionDataset(cfg.data_path, cfg.image_size, cfg.random_crop, flip,
                                   cfg.image_filter_size or cfg.min_image_size, cfg.drop_text_prob, cfg.seed,
                                   filter_small=cfg.filter_small_size, replace_skipped_images=cfg.replace_small_images,
                                   source_options=data_options.source_options(cfg),
                                   caption_options=data_options.caption_options(cfg),
                                   buckets=self.bucket_settings())

    def bucket_settings(self):
        return data_options.bucket_settings(self.cfg, load_config(self.cfg.model_config))

    def build_validation_set(self):
        """The held-out images of validation_split (removed from self.dataset) or the validation_data_path
        folder, read without random crop, flip or caption randomness; None without either."""
        cfg = self.cfg
        fraction, folder = getattr(cfg, "validation_split", 0.0), getattr(cfg, "validation_data_path", "")
        if not (fraction or folder):
            return None
        if folder:
            val = ImageCaptionDataset([folder], cfg.image_size, min_size=cfg.image_filter_size or cfg.min_image_size,
                                      seed=cfg.seed, filter_small=cfg.filter_small_size,
                                      source_options=data_options.source_options(cfg),
                                      caption_options=data_options.caption_options(cfg, for_validation=True),
                                      buckets=self.bucket_settings())
        else:
            train_idx, val_idx = split_validation(self.dataset, fraction, cfg.seed)
            val = self.dataset.subset(val_idx)
            self.dataset = self.dataset.subset(train_idx)
            val.caption_options = data_options.caption_options(cfg, for_validation=True)
        val.random_crop = val.random_flip = False
        val.drop_text_prob = 0.0
        if self.is_main:
            _log.info("validation loss on %d images (%s)", len(val), folder or f"validation_split {fraction:g}")
        return val

    def compile_every_size(self):
        """Whether the compiled steps take every bucket's size in one graph (dynamic height and width):
        with several sizes, ``bucket_dynamic_shape`` not False, and attention that takes one path at every
        size (see :func:`size_free_attention`); else each size compiles its own graphs once."""
        cfg = self.cfg
        sizes = set(self.plan.resolutions) | set(self.validation_sizes())
        wanted = getattr(cfg, "bucket_dynamic_shape", None)
        if not cfg.jit or len(sizes) < 2 or wanted is False:
            return False
        if ms.get_context("device_target") == "Ascend":
            # the dynamic-size graph adds ShapeCalc / TupleToTensor, which document no platform (the
            # audit, docs/ascend_audit.md): not verified on Ascend, so each size compiles its own step there
            if self.is_main:
                _log.info("each of the %d image sizes compiles its own step once (dynamic sizes are not "
                          "verified on Ascend)", len(sizes))
            return False
        positions = max(self.latent_shape_of(s)[1] * self.latent_shape_of(s)[2] for s in sizes)
        ok, why = size_free_attention(self.model, self.rows_per_call(), positions)
        if self.is_main:
            if ok:
                _log.info("%d image sizes share one compiled step (dynamic height and width)", len(sizes))
            else:
                _log.info("each of the %d image sizes compiles its own step once (%s)", len(sizes), why)
        return ok

    def validation_sizes(self):
        if self.val_dataset is None:
            return []
        return [self.val_dataset.size_of(i) for i in range(len(self.val_dataset))]

    def rows_per_call(self):
        """Batch rows of one model call in the step (DreamBooth's prior doubles it)."""
        return self.cfg.train_batch_size

    def latent_shape_of(self, size):
        """(C, h, w) of the latents of a (width, height) image (the VAE's factor from the square shape)."""
        factor = self.cfg.image_size // self.latent_shape[1]
        return (self.latent_shape[0], int(size[1]) // factor, int(size[0]) // factor)

    def build_model(self):
        return build_training_model(self.cfg)

    def select_trainable(self):
        return select_trainable(self.cfg, self.model)

    def build_objective(self, encode_text):
        """The loss the compiled step differentiates (hook: ldm.train.controlnet calls the UNet with its ControlNet)."""
        return DiffusionObjective(self.model, self.prediction_type, encode_text, getattr(self.cfg, "loss_type", "l2"))

    def encodes_text(self):
        """Whether the text encoder runs inside the differentiated step (something in it trains)."""
        cfg = self.cfg
        return bool(cfg.train_text_encoder or (cfg.use_lora and cfg.lora_ft_text_encoder))

    def build_lr_schedule(self):
        cfg = self.cfg
        return build_lr_schedule(cfg.scheduler, cfg.start_learning_rate, cfg.end_learning_rate,
                                 self.total_steps, cfg.warmup_steps, cfg.decay_steps,
                                 num_cycles=cfg.lr_scheduler_num_cycles)

    # ---- state
    def state_params(self):
        """Every Parameter whose value the loop carries between steps (what train_resume.ckpt holds)."""
        params = list(self.trainable) + list(self.optimizer.get_parameters())
        if self.ema is not None:
            params += list(self.ema.shadow) + [self.ema.num_updates]
        if self.scaler is not None:
            params += [p for p in (self.scaler.scale_value, getattr(self.scaler, "counter", None)) if p is not None]
        seen, unique = set(), []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        return unique

    def resume(self):
        cfg = self.cfg
        if not cfg.resume:
            return
        path = cfg.resume if isinstance(cfg.resume, str) else resume_file(cfg.output_path)
        if not os.path.isfile(path):
            if isinstance(cfg.resume, str):
                raise UserError(f"resume checkpoint not found: {path}")
            _log.warning("resume: %s not found, starting from step 0", path)
            return
        meta = load_resume(path, self.state_params())
        if meta.get("world_size", self.world) != self.world:
            _log.warning("resume: saved with %s ranks, continuing with %s (data order changes)",
                         meta.get("world_size"), self.world)
        self.global_step = int(meta.get("global_step", 0))
        self.last_good = path
        if self.is_main:
            _log.info("resumed from %s at step %d", path, self.global_step)

    def save(self, tag):
        """sd-{tag}.ckpt and train_resume.ckpt, only from finite weights (every rank checks, so all stop
        together): a diverged run leaves the previous files as they were."""
        bad = nonfinite_count(self.state_params())
        if bad:
            self.diverged(f"{bad} of {len(self.state_params())} state tensors not finite")
        if not self.is_main:
            return
        meta = dict(global_step=self.global_step, epoch=self.global_step // self.steps_per_epoch,
                    seed=self.cfg.seed, world_size=self.world)
        path = self.save_weights(tag)
        self.ckpts.save_resume(self.state_params(), meta)
        self.last_good = path

    def diverged(self, what):
        raise TrainingDiverged(f"training diverged at step {self.global_step} ({what}); last good checkpoint: "
                               f"{self.last_good or 'none (nothing was saved by this run)'}; lower "
                               f"start_learning_rate, or use amp loss scaling to skip overflowing steps")

    def save_weights(self, tag):
        """sd-{tag}.ckpt (EMA weights as the main weights when use_ema) or sd-{tag}_lora.ckpt."""
        def write():
            if self.cfg.use_lora:
                return lora_lib.save_lora(self.model, self.ckpts.model_path(tag, lora=True))
            return self.ckpts.save_model(self.model, tag, append_dict=spec_record(self.spec))
        if self.ema is not None:
            with self.ema.swapped():
                path = write()
        else:
            path = write()
        if self.cfg.use_lora:
            self.ckpts._prune(lora=True)
        return path

    # ---- data
    def host_batch(self, epoch, micro_step):
        cfg = self.cfg
        size, idx, copies = self.plan.micro_batch(epoch, micro_step, cfg.train_batch_size, self.rank)
        batch = self.load_batch(idx, epoch, size, copies)
        batch["size"] = size
        settings = NoiseSettings.from_cfg(cfg)
        # (noise, input noise); None: adaptive_noise_scale reads the latents, made after the encode
        noise = None if settings.needs_latents else compose_noise(batch, settings)
        terms = self.timestep_terms(batch["t"])
        if "loss_weight" in batch:        # per-sample factors of a mode's loss (DreamBooth's prior weight)
            terms = terms._replace(weight=(terms.weight * batch["loss_weight"]).astype(np.float32))
        return batch, noise, terms

    def timestep_terms(self, t):
        """ldm.train.trainer.TimestepTerms of timesteps ``t`` under this recipe's loss options."""
        return timestep_terms(self.schedule, t, self.prediction_type, **loss_options(self.cfg))

    def timestep_range(self):
        """(low, high) of the training timesteps (min_timestep, max_timestep)."""
        return timestep_range(self.cfg, self.schedule.num_train_timesteps)

    def load_batch(self, idx, epoch, size, copies):
        """The host batch of dataset indices ``idx`` at ``size`` (w, h) (hook: DreamBooth appends the class
        images); an optional ``loss_weight`` (N,) entry multiplies each sample's loss weight."""
        if self.cache is not None:
            return self.cache.batch(idx, epoch, self.timestep_range(), copies)
        return make_batch(self.dataset, idx, epoch, self.timestep_range(), self.latent_shape_of(size), copies)

    def device_inputs(self, batch, noise, terms):
        """ObjectiveInputs on the device: encoded latents and text, timesteps, noise, input noise, abar, Huber
        threshold, weight. ``noise`` None: composed here from the latents (adaptive_noise_scale reads their
        channel means back from the encode's output)."""
        if self.cache is None:
            tokens = Tensor(self.model.tokenize(batch["text"]).astype(np.int32))
            latents, cond = self.step_fn.encode(Tensor(batch["image"]), tokens, Tensor(batch["vae_noise"]))
        else:
            cond = self.cache.cond(batch, self.objective.encode_text)
            latents, cond = self.step_fn.encode(Tensor(batch["mean"]), Tensor(batch["logvar"]), cond,
                                                Tensor(batch["vae_noise"]))
        if noise is None:
            noise = compose_noise(batch, NoiseSettings.from_cfg(self.cfg), latent_channel_means(latents.asnumpy()))
        inputs = ObjectiveInputs(latents, cond, Tensor(batch["t"].astype(np.int32)), Tensor(noise.target),
                                 Tensor(noise.input), Tensor(terms.alphas_cumprod), Tensor(terms.huber_c),
                                 Tensor(terms.weight))
        extra = self.extra_inputs(batch)
        return inputs + extra if extra else inputs       # a plain tuple with the extra input

    def extra_inputs(self, batch):
        """What the objective takes after ObjectiveInputs: an inpainting model's (mask, masked latents) input."""
        return () if self.inpaint is None else (self.inpaint.concat(batch),)

    # ---- loop
    def run(self):
        cfg = self.cfg
        with log_file("ldm", os.path.join(cfg.output_path, f"log_{self.rank}.txt"), log_level_value(cfg.log_level)):
            return self._run()

    def _run(self):
        cfg = self.cfg
        if self.is_main and cfg.dataset_sink_mode:
            _log.warning(sink_notice(device_is_cpu()))
        if self.is_main:
            _log.info("training %d steps (%d per epoch), %d images, %d rank(s), %s objective, %d trainable params, "
                      "%s", self.total_steps, self.steps_per_epoch, len(self.dataset), self.world, self.prediction_type,
                      sum(int(np.prod(p.shape)) for p in self.trainable),
                      "graph mode (ms.jit)" if cfg.jit else "PyNative mode")
            _log.debug("settings: %s", ", ".join(f"{k}={v!r}" for k, v in sorted(vars(cfg).items())))
            self.log_buckets()
        bar = None
        if cfg.show_progress and self.is_main:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=self.global_step, desc="train", dynamic_ncols=True)
        with contextlib.ExitStack() as stack:
            if bar is not None:
                from tqdm.contrib.logging import logging_redirect_tqdm
                stack.enter_context(logging_redirect_tqdm())  # loss lines above the bar, not through it
            stack.enter_context(mindone_flags.profiling(cfg.profile, cfg.output_path))
            last_loss = self.loop(bar)
        if bar is not None:
            bar.close()
        if self.is_main:
            self.metrics.plot()
        if self.board is not None:
            self.board.close()
        self.dump_rank_weights()
        return dict(global_step=self.global_step, last_loss=last_loss, output_path=cfg.output_path)

    def log_buckets(self):
        """The bucket table (resolution, images) and how a batch is made, once at start."""
        if getattr(self.dataset, "bucket_of", None) is None:
            return
        from ldm.data.buckets import bucket_table_lines
        lines = bucket_table_lines(self.dataset.bucket_of)
        _log.info("aspect-ratio buckets: %d in use, %d batches per epoch (a bucket's last batch is filled up from "
                  "the same bucket)\n%s", len(lines) - 1, self.micro_per_epoch, "\n".join(lines))

    def loop(self, bar):
        """Optimiser steps until total_steps; returns the last step's loss."""
        cfg = self.cfg
        accum = cfg.gradient_accumulation_steps
        last_loss = float("nan")
        while self.global_step < self.total_steps:
            step = self.global_step
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            lr = Tensor(np.float32(self.lrs[step]))
            start = time.perf_counter()
            losses, per_sample, timesteps, sizes = [], [], [], []
            for k in range(accum):
                batch, noise, terms = self.host_batch(epoch, in_epoch * accum + k)
                inputs = self.device_inputs(batch, noise, terms)
                if accum == 1:
                    loss, samples, overflow = self.step_fn.step(*inputs, lr)
                else:
                    loss, samples = self.step_fn.accumulate(*inputs)
                losses.append(float(loss.asnumpy()))
                per_sample.append(samples.asnumpy().reshape(-1))
                timesteps.append(batch["t"])
                sizes.append(tuple(batch["size"]))
            if accum > 1:
                overflow = self.step_fn.apply(lr)
            last_loss = float(np.mean(losses))
            step_time = time.perf_counter() - start
            self.note_new_sizes(sizes, step_time)
            self.global_step = step + 1
            detail = dict(bucket="+".join(dict.fromkeys(f"{w}x{h}" for w, h in sizes)),
                          **self.bin_losses(np.concatenate(timesteps), np.concatenate(per_sample)))
            self.after_step(epoch, last_loss, float(self.lrs[step]), step_time, bool(overflow.asnumpy()), bar, detail)
        return last_loss

    def bin_losses(self, t, per_sample):
        """loss_t0..loss_t9 of this step (the per-sample weighted losses by timestep bin); DreamBooth's
        class rows (weighted by prior_loss_weight) count as samples of their own timesteps."""
        if len(per_sample) != len(t):           # an objective without per-sample losses
            return {}
        return timestep_bin_losses(t, per_sample, self.schedule.num_train_timesteps)

    def note_new_sizes(self, sizes, step_time):
        """Log the first step of each batch shape: it includes compiling that shape's graphs (ms.jit
        compiles once per input shape and keeps every compiled shape)."""
        new = [s for s in dict.fromkeys(sizes) if s not in self.compiled_sizes]
        if new and self.compiled_sizes and self.is_main and not self.every_size:
            _log.info("new batch shape %s: step took %.2f s (includes compiling its graphs)",
                      ", ".join(f"{w}x{h}" for w, h in new), step_time)
        self.compiled_sizes.update(new)

    def dump_rank_weights(self):
        """With env MSD_DUMP_RANK_WEIGHTS=DIR every rank writes DIR/rank{r}.npz of its trained weights
        (how the tests check that ranks stay identical; off otherwise)."""
        folder = os.environ.get("MSD_DUMP_RANK_WEIGHTS")
        if folder:
            os.makedirs(folder, exist_ok=True)
            np.savez(os.path.join(folder, f"rank{self.rank}.npz"), **{p.name: p.asnumpy() for p in self.trainable})

    def after_step(self, epoch, loss, lr, step_time, overflow, bar, detail=None):
        cfg = self.cfg
        step = self.global_step
        detail = detail or {}
        if not math.isfinite(loss) and not overflow:     # a skipped (overflowed) fp16 step is not divergence
            self.diverged(f"loss {loss}")
        if self.is_main:
            if step % cfg.log_interval == 0 or step == self.total_steps:
                scale = float(self.scaler.scale_value.asnumpy()) if self.scaler is not None else 1.0
                self.metrics.write(step=step, epoch=epoch, loss=f"{loss:.6f}", lr=f"{lr:.6g}",
                                   step_time_s=f"{step_time:.4f}", loss_scale=scale, **detail)
                if self.board is not None:
                    bins = {f"loss_by_t/{k[len('loss_'):]}": v for k, v in detail.items() if k.startswith("loss_t")}
                    self.board.scalars(step, {"loss/train": loss, "lr": lr, "loss_scale": scale,
                                              "step_time_s": step_time, **bins})
            if step % cfg.callback_size == 0:
                log_loss_line(_log, epoch, step - epoch * self.steps_per_epoch, step, self.total_steps, loss, lr,
                              step_time, overflow)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", step_s=f"{step_time:.2f}")
                bar.update(1)
        epoch_done = step % self.steps_per_epoch == 0
        if cfg.step_mode:
            due, tag = step % cfg.ckpt_save_interval == 0, step
        else:
            done_epochs = step // self.steps_per_epoch
            due, tag = epoch_done and done_epochs % cfg.ckpt_save_interval == 0, done_epochs
        last = step == self.total_steps
        if due or last:
            if not due:  # the final save of a run that stops off the interval
                tag = step if cfg.step_mode else (step // self.steps_per_epoch if epoch_done else f"step{step}")
            self.save(tag)
            if self.is_main:
                self.metrics.plot()
        if cfg.validation_steps and step % cfg.validation_steps == 0 and self.is_main:
            with (self.ema.swapped() if self.ema is not None else contextlib.nullcontext()):
                if self.validation is not None:
                    val_loss = self.validation.loss()
                    self.metrics.write_validation(step, f"{val_loss:.6f}")
                    _log.info("validation loss %.6f at step %d (%d images)", val_loss, step, len(self.val_dataset))
                    if self.board is not None:
                        self.board.scalars(step, {"loss/val": val_loss})
                if cfg.validation_prompts:
                    images = write_validation_images(self.sample_images, cfg, step)[1]
                    if self.board is not None:
                        self.board.images(step, "validation", images)
            self.metrics.plot()


@contextlib.contextmanager
def no_leftovers(output_path):
    """On a failed start, remove the output folder this run created if it holds no checkpoint yet (a
    failed run must not leave an empty or half-made folder that looks like a result); and move the IR
    dump MindSpore writes into the working folder on a compile error (``rank_N/om/analyze_fail.ir``;
    neither save_graphs_path nor MS_DEV_SAVE_GRAPHS_PATH moves it in 2.8) to a temporary folder."""
    created = not os.path.exists(output_path)
    started = time.time() - 1
    try:
        yield
    except BaseException:
        ckpt_dir = os.path.join(output_path, "ckpt")
        has_ckpt = os.path.isdir(ckpt_dir) and any(n.endswith(".ckpt") for n in os.listdir(ckpt_dir))
        if created and os.path.isdir(output_path) and not has_ckpt:
            shutil.rmtree(output_path, ignore_errors=True)
        move_ir_dumps(started)
        raise


def move_ir_dumps(since):
    """Move ``rank_*/om/*.ir`` files written after ``since`` out of the working folder; returns where."""
    dumps = [p for p in glob.glob(os.path.join("rank_*", "om", "*.ir")) if os.path.getmtime(p) >= since]
    if not dumps:
        return None
    target = tempfile.mkdtemp(prefix="msd-vpred-ir-")
    for path in dumps:
        shutil.move(path, os.path.join(target, os.path.basename(path)))
        for folder in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            with contextlib.suppress(OSError):
                os.rmdir(folder)                    # only when now empty
    _log.warning("MindSpore's IR dump of the failed compile moved to %s", target)
    return target


def train(cfg, make_sampler=None):
    """Run a parsed recipe (ldm.train.config.parse_config). Returns a summary dict.
    ``make_sampler``: see :class:`TrainRun` (needed only with validation_steps)."""
    with no_leftovers(cfg.output_path):
        with refusals_first():          # notices of the start only once nothing refused the run
            run = TrainRun(cfg, make_sampler)
        return run.run()
