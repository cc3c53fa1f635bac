"""The training run: build model/data/optimiser from a parsed recipe, resume, loop, save, log.

Randomness is keyed per sample (see ldm.data.dataset), the data order per epoch by the seed, and the
state saved in ``train_resume.ckpt`` is everything the loop carries, so a resumed run reproduces an
uninterrupted one and N ranks reproduce one process with an N-times larger batch.
"""
import logging
import math
import os
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ldm.data.dataset import ImageCaptionDataset, make_batch, shard_indices, steps_per_epoch
from ldm.diffusion.prediction import normalize_prediction_type
from ldm.diffusion.schedule import NoiseSchedule
from ldm.errors import UserError
from ldm.train import lora as lora_lib
from ldm.train.checkpoint import CheckpointManager, load_resume
from ldm.train.ema import EMA
from ldm.train.logging import MetricsLog
from ldm.train.lr_schedule import build_lr_schedule
from ldm.train.optim import build_optimizer
from ldm.train.trainer import DiffusionObjective, TrainStep, timestep_terms
from ldm.util import load_config

_log = logging.getLogger("ldm.train")


# ---------------------------------------------------------------- runtime
def setup_runtime(cfg):
    """Device, mode and (with use_parallel) the communication group. Returns (rank, world_size)."""
    if cfg.device_target:
        ms.set_device(cfg.device_target)
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


def device_is_cpu():
    return ms.get_context("device_target") == "CPU"


# ---------------------------------------------------------------- model
def model_section(model_cfg):
    return model_cfg.get("model", model_cfg)


def build_training_model(cfg):
    """LatentDiffusion from the model YAML, weights from pretrained_model_path (helper B's loader).
    Other ``target`` classes (test stand-ins) are built directly and must start from random weights."""
    config = load_config(cfg.model_config)
    target = str(model_section(config).get("target", ""))
    if target.endswith("LatentDiffusion"):
        from ldm.convert.checkpoint import load_model
        return load_model(config, cfg.pretrained_model_path or None), config
    if cfg.pretrained_model_path:
        raise UserError(f"pretrained_model_path needs a LatentDiffusion model config, got target {target!r}")
    from ldm.util import instantiate_from_config
    return instantiate_from_config(model_section(config)), config


def resolve_prediction_type(cfg, model, config):
    name = cfg.prediction_type or getattr(model, "prediction_type", None) \
        or model_section(config).get("prediction_type") \
        or model_section(config).get("params", {}).get("parameterization", "eps")
    return normalize_prediction_type(name)


def latent_shape(model, config, image_size):
    """(C, h, w) of the VAE latents at ``image_size``, from the config (or one dummy encode)."""
    params = model_section(config).get("params", {})
    first = params.get("first_stage_config", {}).get("params", {})
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
            targets.append(model.model.diffusion_model if hasattr(model, "model") else model.diffusion_model)
        if cfg.lora_ft_text_encoder:
            targets.append(model.cond_stage_model)
        params = []
        for net in targets:
            params += lora_lib.inject_lora(net, rank=cfg.lora_rank, alpha=cfg.lora_alpha or None,
                                           text_encoder=net is getattr(model, "cond_stage_model", None))
        return params
    unet = model.model.diffusion_model if hasattr(model, "model") else model.diffusion_model
    params = list(unet.get_parameters())
    if cfg.train_text_encoder:
        params += list(model.cond_stage_model.get_parameters())
    for p in params:
        p.requires_grad = True
    return params


def apply_precision(cfg, model):
    """Mixed precision on Ascend/GPU; CPU trains in fp32. Returns the dynamic loss scaler or None."""
    if cfg.amp_level == "O0":
        return None
    if device_is_cpu():
        _log.warning("amp_level %s ignored on CPU: training in fp32", cfg.amp_level)
        return None
    dtype = ms.float16 if cfg.amp_dtype == "fp16" else ms.bfloat16
    unet = model.model.diffusion_model if hasattr(model, "model") else model.diffusion_model
    ms.amp.auto_mixed_precision(unet, cfg.amp_level, dtype=dtype)
    return ms.amp.DynamicLossScaler(cfg.init_loss_scale, int(cfg.loss_scale_factor), cfg.scale_window)


def apply_recompute(model):
    unet = model.model.diffusion_model if hasattr(model, "model") else model.diffusion_model
    blocks = []
    for name in ("input_blocks", "middle_block", "output_blocks"):
        cell = getattr(unet, name, None)
        if cell is not None:
            blocks += list(cell.cells()) if isinstance(cell, (nn.CellList, nn.SequentialCell)) else [cell]
    for block in blocks:
        block.recompute()
    return len(blocks)


# ---------------------------------------------------------------- the run
class TrainRun:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rank, self.world = setup_runtime(cfg)
        self.is_main = self.rank == 0
        self.dataset = ImageCaptionDataset(cfg.data_path, cfg.image_size, cfg.random_crop, cfg.random_flip,
                                           cfg.min_image_size, cfg.drop_text_prob, cfg.seed)
        self.model, self.model_config = build_training_model(cfg)
        self.model.set_train(False)  # no dropout: training here is deterministic given the seed
        self.prediction_type = resolve_prediction_type(cfg, self.model, self.model_config)
        if hasattr(self.model, "prediction_type"):
            self.model.prediction_type = self.prediction_type  # what samplers of this model must assume
        params = model_section(self.model_config).get("params", {})
        self.schedule = NoiseSchedule.from_model_params(params, rescale_zero_snr=cfg.rescale_zero_snr)
        self.trainable = select_trainable(cfg, self.model)
        self.scaler = apply_precision(cfg, self.model)
        if cfg.recompute:
            apply_recompute(self.model)
        self.latent_shape = latent_shape(self.model, self.model_config, cfg.image_size)
        self.micro_per_epoch = steps_per_epoch(len(self.dataset), cfg.train_batch_size, self.world)
        if self.micro_per_epoch < cfg.gradient_accumulation_steps:
            raise UserError(f"{len(self.dataset)} usable images are fewer than one optimiser step needs "
                            f"(batch {cfg.train_batch_size} x {self.world} ranks x "
                            f"{cfg.gradient_accumulation_steps} accumulation steps)")
        self.steps_per_epoch = self.micro_per_epoch // cfg.gradient_accumulation_steps
        self.total_steps = self.steps_per_epoch * cfg.epochs if cfg.epochs > 0 else cfg.max_steps
        if cfg.max_steps > 0:
            self.total_steps = min(self.total_steps, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps
        self.lrs = build_lr_schedule(cfg.scheduler, cfg.start_learning_rate, cfg.end_learning_rate,
                                     self.total_steps, cfg.warmup_steps, cfg.decay_steps)
        self.optimizer = build_optimizer(cfg.optim, self.trainable, cfg.betas, cfg.adam_eps, cfg.weight_decay)
        self.ema = EMA(self.trainable, cfg.ema_decay) if cfg.use_ema else None
        reducer = nn.DistributedGradReducer(self.trainable, mean=True, degree=self.world) \
            if self.world > 1 else None
        encode_text = bool(cfg.train_text_encoder or (cfg.use_lora and cfg.lora_ft_text_encoder))
        self.objective = DiffusionObjective(self.model, self.prediction_type, encode_text)
        self.cache = None
        if cfg.cache_latents:
            from ldm.data.latent_cache import LatentCache
            self.cache = LatentCache(self.model, self.dataset, self.latent_shape, encode_text,
                                     show_progress=cfg.show_progress and self.is_main)
        self.step_fn = TrainStep(self.model, self.objective, self.trainable, self.optimizer, self.ema, reducer,
                                 self.scaler, cfg.clip_grad, cfg.max_grad_norm, cfg.drop_overflow_update,
                                 cfg.gradient_accumulation_steps, use_cached_latents=self.cache is not None,
                                 jit=cfg.jit)
        self.ckpts = CheckpointManager(cfg.output_path, cfg.ckpt_max_keep)
        self.global_step = 0
        self.resume()
        self.metrics = MetricsLog(cfg.output_path, resume_step=self.global_step if cfg.resume else None) \
            if self.is_main else None

    # ---- state
    def state_params(self):
        """Every Parameter whose value the loop carries between steps (what train_resume.ckpt holds)."""
        params = list(self.trainable) + list(self.optimizer.get_parameters())
        if self.ema is not None:
            params += list(self.ema.shadow) + [self.ema.num_updates]
        if self.scaler is not None:
            params += [self.scaler.scale_value, self.scaler.counter]
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
        path = cfg.resume if isinstance(cfg.resume, str) else self.ckpts.resume_path
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
        if self.is_main:
            _log.info("resumed from %s at step %d", path, self.global_step)

    def save(self, tag):
        if not self.is_main:
            return
        meta = dict(global_step=self.global_step, epoch=self.global_step // self.steps_per_epoch,
                    seed=self.cfg.seed, world_size=self.world)
        self.save_weights(tag)
        self.ckpts.save_resume(self.state_params(), meta)

    def save_weights(self, tag):
        """sd-{tag}.ckpt (EMA weights as the main weights when use_ema) or sd-{tag}_lora.ckpt."""
        def write():
            if self.cfg.use_lora:
                return lora_lib.save_lora(self.model, self.ckpts.model_path(tag, lora=True))
            return self.ckpts.save_model(self.model, tag)
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
        idx = shard_indices(len(self.dataset), epoch, cfg.seed, cfg.train_batch_size, micro_step,
                            self.rank, self.world)
        batch = make_batch(self.dataset, idx, epoch, self.schedule.num_train_timesteps, self.latent_shape) \
            if self.cache is None else self.cache.batch(idx, epoch, self.schedule.num_train_timesteps)
        noise = batch["noise"]
        if cfg.noise_offset:
            noise = noise + cfg.noise_offset * batch["offset_noise"]
        terms = timestep_terms(self.schedule, batch["t"], self.prediction_type, cfg.snr_gamma)
        return batch, noise.astype(np.float32), terms

    def device_inputs(self, batch, noise, terms):
        if self.cache is None:
            tokens = Tensor(self.model.tokenize(batch["text"]).astype(np.int32))
            latents, cond = self.step_fn.encode(Tensor(batch["image"]), tokens, Tensor(batch["vae_noise"]))
        else:
            cond = self.cache.cond(batch, self.objective.encode_text)
            latents, cond = self.step_fn.encode(Tensor(batch["mean"]), Tensor(batch["logvar"]), cond,
                                                Tensor(batch["vae_noise"]))
        return (latents, cond, Tensor(batch["t"].astype(np.int32)), Tensor(noise)) + tuple(Tensor(a) for a in terms)

    # ---- loop
    def run(self):
        cfg = self.cfg
        accum = cfg.gradient_accumulation_steps
        if self.is_main and cfg.dataset_sink_mode:
            _log.info("dataset_sink_mode is accepted for MindONE recipes; steps are fed from the host here")
        if self.is_main:
            _log.info("training %d steps (%d per epoch), %d images, %d rank(s), %s objective, %d trainable params",
                      self.total_steps, self.steps_per_epoch, len(self.dataset), self.world, self.prediction_type,
                      sum(int(np.prod(p.shape)) for p in self.trainable))
        bar = None
        if cfg.show_progress and self.is_main:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=self.global_step, desc="train", dynamic_ncols=True)
        last_loss = float("nan")
        while self.global_step < self.total_steps:
            step = self.global_step
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            lr = Tensor(np.float32(self.lrs[step]))
            start = time.perf_counter()
            losses = []
            for k in range(accum):
                inputs = self.device_inputs(*self.host_batch(epoch, in_epoch * accum + k))
                if accum == 1:
                    loss, overflow = self.step_fn.step(*inputs, lr)
                else:
                    loss = self.step_fn.accumulate(*inputs)
                losses.append(float(loss.asnumpy()))
            if accum > 1:
                overflow = self.step_fn.apply(lr)
            last_loss = float(np.mean(losses))
            step_time = time.perf_counter() - start
            self.global_step = step + 1
            self.after_step(epoch, last_loss, float(self.lrs[step]), step_time, bool(overflow.asnumpy()), bar)
        if bar is not None:
            bar.close()
        if self.is_main:
            self.metrics.plot()
        self.dump_rank_weights()
        return dict(global_step=self.global_step, last_loss=last_loss, output_path=cfg.output_path)

    def dump_rank_weights(self):
        """With env MSD_DUMP_RANK_WEIGHTS=DIR every rank writes DIR/rank{r}.npz of its trained weights
        (how the tests check that ranks stay identical; off otherwise)."""
        folder = os.environ.get("MSD_DUMP_RANK_WEIGHTS")
        if folder:
            os.makedirs(folder, exist_ok=True)
            np.savez(os.path.join(folder, f"rank{self.rank}.npz"), **{p.name: p.asnumpy() for p in self.trainable})

    def after_step(self, epoch, loss, lr, step_time, overflow, bar):
        cfg = self.cfg
        step = self.global_step
        if self.is_main:
            if not math.isfinite(loss) and not overflow:
                raise UserError(f"loss became {loss} at step {step}; lower start_learning_rate or enable amp loss scaling")
            if step % cfg.log_interval == 0 or step == self.total_steps:
                scale = float(self.scaler.scale_value.asnumpy()) if self.scaler is not None else 1.0
                self.metrics.write(step=step, epoch=epoch, loss=f"{loss:.6f}", lr=f"{lr:.6g}",
                                   step_time_s=f"{step_time:.4f}", loss_scale=scale)
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
            from ldm.train.validation import sample_validation_images
            with (self.ema.swapped() if self.ema is not None else _nullcontext()):
                sample_validation_images(self.model, cfg, self.model_config, self.prediction_type, step)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def train(cfg):
    """Run a parsed recipe (ldm.train.config.parse_config). Returns a summary dict."""
    return TrainRun(cfg).run()
