"""Checks of a generation run's inputs that need no model: numeric domains, image size against the
model's geometry, the machine's free memory (the estimate itself is ldm.memory_estimate), the sampler's
plan, output folder, init files.

text_to_image.py runs every one of them before its first log line, before a model is built and before
a folder is made, so a bad input is one line on stderr and nothing else; the Python API
(``ldm.pipeline``) runs the same functions on its arguments.
"""
import dataclasses
import math
import os
import tempfile

import numpy as np

from ldm.errors import UserError

SCALE_LIMIT = 1000.0     # |--scale|, |--lora_scale|: far past any useful value, keeps float32 maths finite
ETA_LIMIT = 100.0        # DDIM eta: 1 = DDPM's noise; above 1 only the injected noise grows
SEED_LIMIT = 2 ** 63     # numpy's generators take non-negative seeds; ours are seed + image index


def check_number(flag, value, low=None, high=None, low_open=False, integer=False):
    """A finite number in [low, high] ((low, high] with ``low_open``); one UserError naming ``flag``."""
    if integer:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    else:
        try:
            ok = math.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise UserError(f"{flag} must be a finite {'integer' if integer else 'number'}, got {value!r}")
    below = value <= low if low_open else value < low
    if (low is not None and below) or (high is not None and value > high):
        fmt = "{}" if integer else "{:g}"
        lo = "-inf" if low is None else fmt.format(low)
        hi = "inf" if high is None else fmt.format(high)
        raise UserError(f"{flag} must be in {'(' if low_open else '['}{lo}, {hi}], got {value!r}")
    return value


def check_text(flag, value):
    """Prompts and paths go into manifest.jsonl as UTF-8: refuse text that has no UTF-8 form (bytes
    of another encoding on the command line arrive as lone surrogates)."""
    if value is None:
        return
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        hint = "write it in UTF-8" if "prompt" in flag and "path" not in flag else "rename the file"
        raise UserError(f"{flag} {value.encode('utf-8', 'replace').decode('utf-8')!r} is not valid UTF-8 text "
                        f"(character {exc.start}); {hint}") from exc


# ---------------------------------------------------------------- the model's geometry, from its config
@dataclasses.dataclass(frozen=True)
class ModelGeometry:
    """What sizes and memory depend on, read from a model YAML (SD's values where a key is missing)."""
    latent_channels: int = 4
    vae_factor: int = 8            # image -> latent downsampling (2 ** (len(VAE ch_mult) - 1))
    unet_levels: int = 4           # len(UNet channel_mult): the latent is halved levels - 1 times
    model_channels: int = 320
    channel_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple = (4, 2, 1)
    num_heads: int = -1
    num_head_channels: int = 64
    vae_ch: int = 128
    vae_ch_mult: tuple = (1, 2, 4, 4)
    context_dim: int = 1024        # the text context's width (SD 2.x 1024, SD 1.x 768)

    @property
    def size_multiple(self):
        """W and H must be multiples of this: the VAE's factor times the UNet's downsamplings (a latent
        the UNet cannot halve evenly fails at its skip concatenation: tiny model, W=36 -> 9x9 latent,
        measured 'For primitive[Concat] only support one axis different')."""
        return self.vae_factor * 2 ** (self.unet_levels - 1)

    def heads(self, channels):
        return channels // self.num_head_channels if self.num_head_channels not in (-1, None, 0) \
            else max(1, int(self.num_heads))


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def geometry_from_config(config):
    """ModelGeometry of a model config (YAML path or dict); a malformed entry is one UserError."""
    from ldm.util import load_config, part_params
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else (config or {})
    try:
        unet = part_params(cfg, "unet_config") if cfg else {}
        dd = (part_params(cfg, "first_stage_config") if cfg else {}).get("ddconfig") or {}
        base = ModelGeometry()
        mult = tuple(int(m) for m in unet.get("channel_mult", base.channel_mult))
        vae_mult = tuple(int(m) for m in dd.get("ch_mult", base.vae_ch_mult))
        return ModelGeometry(
            # the latents the sampler runs on: the UNet's output (an inpainting UNet takes 5 more inputs)
            latent_channels=int(unet.get("out_channels", unet.get("in_channels", base.latent_channels))),
            vae_factor=2 ** (len(vae_mult) - 1), unet_levels=len(mult),
            model_channels=int(unet.get("model_channels", base.model_channels)), channel_mult=mult,
            num_res_blocks=int(unet.get("num_res_blocks", base.num_res_blocks)),
            attention_resolutions=tuple(int(a) for a in unet.get("attention_resolutions",
                                                                  base.attention_resolutions)),
            num_heads=int(unet.get("num_heads", -1)), num_head_channels=int(unet.get("num_head_channels", -1)),
            vae_ch=int(dd.get("ch", base.vae_ch)), vae_ch_mult=vae_mult,
            context_dim=int(_first(unet.get("context_dim", base.context_dim)) or base.context_dim))
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"model config: unreadable UNet/VAE sizes ({exc})") from exc


def check_size(width, height, geometry=None):
    """W and H: positive multiples of the model's size multiple (64 for SD, 8 for the tiny demo model)."""
    multiple = (geometry or ModelGeometry()).size_multiple
    for flag, v in (("--W (width)", width), ("--H (height)", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % multiple:
            raise UserError(f"{flag} must be a positive multiple of {multiple} for this model (VAE factor "
                            f"{(geometry or ModelGeometry()).vae_factor} x UNet downsampling), got {v}")


# ---------------------------------------------------------------- memory
def memory_limit():
    """``$MSD_MEMORY_LIMIT`` in bytes (a number with an optional K/M/G/T suffix, powers of 1024), or None:
    a cap the memory plan treats as the machine's free memory (to leave room for other jobs, or to test)."""
    text = os.environ.get("MSD_MEMORY_LIMIT", "").strip()
    if not text:
        return None
    units = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    factor = units.get(text[-1:].upper(), 1)
    number = text[:-1] if factor != 1 else text
    try:
        value = float(number) * factor
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"MSD_MEMORY_LIMIT={text!r}: give a size in bytes, e.g. 12G or 800M")
    return int(value)


def available_memory():
    """Bytes this process may still allocate: MemAvailable, lowered by a cgroup limit and by
    $MSD_MEMORY_LIMIT; None if unknown."""
    cap = memory_limit()
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as f:
                limit = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                usage = int(f.read().strip())
            if limit.isdigit() and int(limit) < 2 ** 60:
                avail = min(avail, max(0, int(limit) - usage))
        except (OSError, ValueError):
            continue
    if cap is not None:
        avail = cap if avail is None else min(avail, cap)
    return avail


# ---------------------------------------------------------------- sampler
def build_sampler(spec, name, eta=0.0, **overrides):
    """Sampler ``name`` on ``spec``; its ValueErrors (options it refuses) become one UserError."""
    from ldm.diffusion.samplers import SAMPLERS, get_sampler
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if eta and name in SAMPLERS and "eta" in SAMPLERS[name][0].defaults:   # DDIM-family samplers only
        overrides["eta"] = float(eta)
    try:
        return get_sampler(name, spec=spec, **overrides)
    except KeyError as exc:
        raise UserError(f"unknown sampler {name!r}: {exc}".rstrip()) from exc
    except (TypeError, ValueError) as exc:
        raise UserError(f"sampler {name!r}: {exc}") from exc


def check_steps(steps, spec):
    check_number("--sampling_steps", steps, 1, spec.num_train_timesteps, integer=True)


def plan_sampler(sampler, steps):
    """``sampler.set_timesteps(steps)`` once, its per-sampler limits as one UserError line."""
    try:
        sampler.set_timesteps(int(steps))
    except ValueError as exc:
        raise UserError(f"sampler {getattr(sampler, 'name', type(sampler).__name__)} with {steps} steps: "
                        f"{exc}") from exc
    return sampler


def check_strength(strength, steps):
    check_number("--strength", strength, 0.0, 1.0, low_open=True)
    if int(steps * float(strength)) == 0:
        raise UserError(f"--strength {strength} with {steps} steps leaves no step to run; raise either")


# ---------------------------------------------------------------- files
def check_output_path(path):
    """The output folder must be a folder (or creatable) and writable: a probe file is written and
    removed in it, or in the nearest folder above that exists (root ignores permission bits, so
    os.access would say yes on a read-only mount's neighbours; a real write does not lie)."""
    check_text("--output_path", path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output_path {path} exists and is not a folder")
    for name in ("samples", "manifest.jsonl"):
        inner = os.path.join(path, name)
        if name == "samples" and os.path.exists(inner) and not os.path.isdir(inner):
            raise UserError(f"{inner} exists and is not a folder")
        if name == "manifest.jsonl" and os.path.exists(inner) and not os.path.isfile(inner):
            raise UserError(f"{inner} exists and is not a regular file")
    probe_dir = os.path.abspath(path)
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        raise UserError(f"--output_path {path}: {probe_dir} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".write-probe-")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as exc:
        raise UserError(f"--output_path {path}: cannot write in {probe_dir}: {exc.strerror or exc}") from exc


def check_input_file(flag, path):
    check_text(flag, path)
    if not os.path.exists(path):
        raise UserError(f"{flag} {path}: file not found")
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: not a regular file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from exc
