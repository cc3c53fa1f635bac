"""Training an inpainting model: the extra UNet input of every sample, [mask, masked-image latents].

A model whose UNet takes 2 x latent + 1 channels (SD 2.x / 1.5 inpainting; ldm.pipeline_inpaint) is trained by
train_text_to_image.py like any other: the recipe's objective (eps or v, the model's spec) on x_t, with the UNet
input ``[x_t, mask, masked-image latents]`` along channels (diffusers' order, what the pipeline feeds it). Per
sample: a random mask (ldm.data.masks: the whole image 25% of the time, else rectangles or brush strokes),
drawn from the sample's own ``aux_seed`` stream (so it depends on (seed, epoch, sample) only and a resumed run
draws the same); the masked image (the repaint region set to 0 in [-1, 1]) encoded by the frozen VAE with the
sample's posterior noise; the mask at latent size (pixel (f*i, f*j), as the pipeline's nearest resize).
The held-out validation images get masks keyed by their index (the same every evaluation).

Latent caching is refused (the masked image changes every step).
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ldm.data.masks import random_mask
from ldm.errors import UserError
from ldm.train.objective_options import aux_rng

VALIDATION_MASK_STREAM = 0x1A5C


def is_inpainting(model):
    """Whether ``model``'s UNet takes 2 x latent + 1 input channels (a UNet that does not say: no)."""
    unet = getattr(model, "diffusion_model", None)
    channels = getattr(unet, "in_channels", None), getattr(unet, "out_channels", None)
    return None not in channels and int(channels[0]) == 2 * int(channels[1]) + 1


def inpaint_conditioning(model, cfg):
    """InpaintConditioning for an inpainting model, None for any other; refuses cache_latents."""
    if not is_inpainting(model):
        return None
    if getattr(cfg, "cache_latents", False):
        raise UserError("cache_latents: an inpainting model sees a new random mask (and masked image) every step, "
                        "so its latents cannot be cached; set cache_latents False")
    return InpaintConditioning(model, jit=getattr(cfg, "jit", True))


class InpaintConditioning(nn.Cell):
    """``concat(batch)`` -> Tensor (N, 1 + C, h, w): the mask at latent size, then the masked image's latents."""

    def __init__(self, model, jit=True):
        super().__init__(auto_prefix=False)
        self.model = model
        self.encode = ms.jit(self._encode) if jit else self._encode

    def _encode(self, images, masks, vae_noise):
        mean, logvar = self.model.encode_first_stage(images * (1.0 - masks))
        return ops.stop_gradient(self.model.get_first_stage_encoding(mean, logvar, vae_noise))

    @staticmethod
    def masks(batch):
        """float32 (N, 1, H, W) masks of a host batch (1 = repaint)."""
        n, _, height, width = batch["image"].shape
        if "aux_seed" in batch:
            rngs = [aux_rng(s, "inpaint_mask") for s in batch["aux_seed"]]
        else:                     # validation batches: keyed by the image's index, the same every evaluation
            rngs = [np.random.default_rng([int(i), VALIDATION_MASK_STREAM]) for i in batch["index"]]
        return np.stack([random_mask(rng, height, width)[None] for rng in rngs]).astype(np.float32)

    def concat(self, batch, masks=None):
        """The extra UNet input of ``batch`` (host arrays: image (N, 3, H, W) in [-1, 1], vae_noise, aux_seed or
        index); ``masks`` (N, 1, H, W) replaces the random ones."""
        masks = self.masks(batch) if masks is None else np.asarray(masks, np.float32)
        masked_latents = self.encode(Tensor(batch["image"]), Tensor(masks), Tensor(batch["vae_noise"]))
        factor = masks.shape[-1] // masked_latents.shape[-1]
        mask_latent = Tensor(np.ascontiguousarray(masks[:, :, ::factor, ::factor]))
        return ops.cat((mask_latent, masked_latents), 1)
