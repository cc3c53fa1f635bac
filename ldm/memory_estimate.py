"""Peak host memory of a text -> image run, estimated before anything is allocated, so that a run that cannot
fit is refused in one line instead of being killed by the kernel's OOM killer (which gives no message).

The estimate is meant as an upper bound of the process's peak resident memory on CPU (measured as
``ru_maxrss``), built from the phases that dominate it (tests/test_memory_estimate.py checks it against
measured peaks at several sizes and attention modes; bench/bench_memory.py at full size):

* loading: the checkpoint's arrays as read (``file_bytes``) and the fp32 parameters (counted from the
  config by :mod:`ldm.param_count`, since an fp16 file is half their size) are alive together;
* the UNet call with guidance (batch 2N): the largest self-attention's scores, of which MindSpore's
  graph holds about ``SCORE_COPIES`` score-sized tensors at once (scores, softmax, its temporary), at the
  size the attention mode allows (:func:`ldm.models.attention_ops.peak_scores_bytes`: whole for
  standard, one chunk for chunked); plus the activations the UNet keeps (skips, the top level's GEGLU);
* the VAE decode of N images: its widest activation (the upsampled 256-channel map at full resolution
  for SD) a few times over, and the mid-block attention (one head over all latent pixels);
* a fixed part: the interpreter, MindSpore's runtime and the compiled graphs.
"""
import dataclasses
import os

from ldm.errors import UserError

GIB = 2 ** 30
# Constants measured on MindSpore 2.8 CPU graph mode (2-core AMD EPYC, 2026-12-06; bench/bench_memory.py,
# tests/test_memory_estimate.py). MindSpore's CPU memory pool keeps what a graph took, so the retained
# activations are far more than the live ones: SD 2.x UNet calls at 48-96 latent pixels held 126-175 x
# model_channels floats per latent position and sample (up to 7.7 GiB at 96x96, batch 4); an attention call
# held 2.2 score-sized tensors for 3.2 GiB of scores and 3.7 for 0.5 GiB chunks (allocator overhead);
# the SD VAE decode 4.9-6.3 GiB per megapixel; compiling the UNet's graph 0.8 GiB. A second phase (the VAE
# after the UNet) reused part of the first one's pool: it added 20-48% of what it takes alone when it
# decoded one image per call, 72% for two.
FIXED_BYTES = int(0.6 * GIB)            # interpreter, MindSpore's runtime, the tokenizer
UNET_GRAPH_BYTES = int(0.85 * GIB)      # compiled graphs of the UNet and the text encoder
SCORE_COPIES = 2.2                      # score-sized tensors an attention call holds (scores, softmax, temp)
SCORE_OVERHEAD_BYTES = int(0.75 * GIB)  # the allocator's share on top of them
UNET_RETAINED_FLOATS = 180              # x model_channels floats per latent position and sample
VAE_WIDEST_COPIES = 5.5                 # copies of the decoder's widest map (SD: 256 ch at full size)
SECOND_PHASE_SHARE = 0.75               # what the smaller of the UNet and VAE phases adds on top of the larger
SECOND_PHASE_SHARE_ONE_IMAGE = 0.5      # ... when the VAE decodes one image per call (measured 20-48%)
TEXT_TOKENS = 77


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes: ``total`` = fixed + max(load, weights + batch + max(unet, vae) + share x min(unet, vae)) (share:
    SECOND_PHASE_SHARE, or SECOND_PHASE_SHARE_ONE_IMAGE with one image per decode); ``what`` names the
    largest phase."""
    total: int
    weights: int
    load: int
    unet: int
    vae: int
    batch: int = 0            # the whole batch's own tensors (batch_bytes)
    vae_images: int = 2       # images per VAE decode (how much of its pool the VAE reuses)

    @property
    def what(self):
        if self.load >= self.weights + self.batch + _phases(self.unet, self.vae, self.vae_images):
            return "loading the checkpoint beside the weights"
        return "the guided UNet call" if self.unet >= self.vae else "the VAE decode"


def _mode(attention):
    return (attention.mode, attention.chunk) if attention is not None else ("auto", None)


def _attention_bytes(scores):
    return int(SCORE_COPIES * scores) + (SCORE_OVERHEAD_BYTES if scores else 0)


def unet_call_bytes(geometry, latent_h, latent_w, batch, attention=None):
    """Peak bytes of one UNet call on ``batch`` latents beyond its weights: compiled graph, the largest
    attention call's scores at the size the mode allows, retained activations."""
    from ldm.models.attention_ops import peak_scores_bytes
    mode, chunk = _mode(attention)
    g = geometry
    scores = 0
    for level, mult in enumerate(g.channel_mult):
        positions = latent_h * latent_w // 4 ** level
        if 2 ** level in g.attention_resolutions:
            heads = g.heads(g.model_channels * mult)
            scores = max(scores, peak_scores_bytes(mode, batch, heads, positions, positions, chunk),
                         peak_scores_bytes(mode, batch, heads, positions, TEXT_TOKENS, chunk))
    retained = 4 * UNET_RETAINED_FLOATS * g.model_channels * batch * latent_h * latent_w
    return UNET_GRAPH_BYTES + _attention_bytes(scores) + retained


def vae_decode_bytes(geometry, width, height, images, attention=None):
    """Peak bytes of decoding ``images`` latents to width x height beyond the VAE's weights."""
    from ldm.models.attention_ops import peak_scores_bytes
    mode, chunk = _mode(attention)
    g = geometry
    mult = g.vae_ch_mult
    widest = 0
    for j in range(len(mult)):                 # level j at (H/2^j, W/2^j) also holds level j+1's upsampled map
        channels = g.vae_ch * max(mult[j], mult[min(j + 1, len(mult) - 1)])
        widest = max(widest, channels * (height >> j) * (width >> j))
    pixels = (height // g.vae_factor) * (width // g.vae_factor)
    return _attention_bytes(peak_scores_bytes(mode, images, 1, pixels, pixels, chunk)) + \
        4 * images * VAE_WIDEST_COPIES * widest


def batch_bytes(geometry, width, height, images, guided=True):
    """What a run holds for its whole batch whatever the micro-batches: the text context (2N x 77 x D with
    guidance), the sampler's latent states (x, noise, model outputs, multistep history: ~6 copies) and the
    decoded uint8 images."""
    g = geometry
    latent = g.latent_channels * (height // g.vae_factor) * (width // g.vae_factor)
    context = (2 if guided else 1) * TEXT_TOKENS * g.context_dim
    return images * (4 * (context + 6 * latent) + 3 * height * width)


def _phases(unet, vae, vae_images=2):
    share = SECOND_PHASE_SHARE_ONE_IMAGE if vae_images == 1 else SECOND_PHASE_SHARE
    return max(unet, vae) + int(share * min(unet, vae))


def estimate(geometry, width, height, batch, guided=True, file_bytes=0, param_count=0, attention=None,
             unet_batch=None, vae_batch=None):
    """MemoryEstimate of generating ``batch`` images at width x height (``param_count``: the model's
    parameters, held as fp32; ``file_bytes``: the checkpoint's size as read), the UNet called on
    ``unet_batch`` and the VAE on ``vae_batch`` images at a time (None: all)."""
    weights = 4 * int(param_count)
    latent_h, latent_w = height // geometry.vae_factor, width // geometry.vae_factor
    unet = unet_call_bytes(geometry, latent_h, latent_w, (unet_batch or batch) * (2 if guided else 1), attention)
    vae = vae_decode_bytes(geometry, width, height, vae_batch or batch, attention)
    load = int(file_bytes) + weights
    held = batch_bytes(geometry, width, height, batch, guided)
    total = FIXED_BYTES + max(load, weights + held + _phases(unet, vae, vae_batch or batch))
    return MemoryEstimate(total, weights, load, unet, vae, held, vae_batch or batch)


def config_param_count(config):
    """Parameters of the model a config (YAML path or dict) builds; 0 when it cannot be read."""
    from ldm.param_count import model_params
    from ldm.util import load_config
    try:
        cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else (config or {})
        return sum(model_params(cfg).values())
    except (UserError, TypeError, ValueError, AttributeError, KeyError):
        return 0


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Images per UNet call and per VAE decode (None: the whole batch), the estimate they give and the
    whole batch's (``whole``)."""
    unet_batch: int
    vae_batch: int
    estimate: MemoryEstimate
    whole: MemoryEstimate

    @property
    def sliced(self):
        return self.unet_batch is not None or self.vae_batch is not None


def _divisors_desc(n):
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]), reverse=True)


def plan(geometry, width, height, batch, guided=True, file_bytes=0, param_count=0, attention=None, available=None):
    """The largest micro-batches (divisors of ``batch``, so every call has one shape and compiles once) whose
    estimate fits ``available`` bytes (default: what the machine has free): the whole batch when it fits,
    else UNet calls and VAE decodes on fewer images at a time (the same pictures up to rounding: images are
    independent).
    One UserError line when even one image at a time does not fit."""
    from ldm.run_checks import available_memory
    available = available_memory() if available is None else available
    full = estimate(geometry, width, height, batch, guided, file_bytes, param_count, attention)
    if available is None or full.total <= available:
        return MemoryPlan(None, None, full, full)
    # the VAE decodes one image at a time (its time is linear in the images: 768 px, 46.6 s for one, 93.8 s
    # for two), the UNet as many as fit
    for unet_batch in _divisors_desc(batch):
        sliced = estimate(geometry, width, height, batch, guided, file_bytes, param_count, attention,
                          unet_batch=unet_batch, vae_batch=1)
        if sliced.total <= available:
            return MemoryPlan(None if unet_batch == batch else unet_batch, None if batch == 1 else 1, sliced, full)
    one = estimate(geometry, width, height, 1, guided, file_bytes, param_count, attention)
    mode = _mode(attention)[0]
    if one.total <= available:
        raise UserError(f"--n_samples {batch} at --W {width} --H {height}: the batch's latents, text context and "
                        f"images alone need {full.batch / GIB:,.1f} GiB beside the model, more than the "
                        f"{available / GIB:,.1f} GiB of memory available; use a smaller --n_samples (and more "
                        "--n_iter)")
    hint = "use a smaller --W/--H"
    if one.what == "the guided UNet call" and mode == "standard":
        hint = "use --attention chunked (or auto) or a smaller --W/--H"
    raise UserError(f"--W {width} --H {height} needs about {one.total / GIB:,.1f} GiB at its peak even one image at "
                    f"a time ({one.what}; --attention {mode}), more than the {available / GIB:,.1f} GiB of "
                    f"memory available; {hint}")
