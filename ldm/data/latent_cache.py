"""``--cache_latents``: encode every image (and caption) once with the frozen VAE / text encoder.

The cache holds the VAE posterior (mean, logvar) per image, so each epoch still draws a fresh latent
sample z = mean + exp(logvar / 2) * noise, and, when the text encoder is frozen, the context of every
caption plus the empty prompt (for caption dropout). Images are center-cropped once: random crop and
flip do not apply to cached runs. Per-sample randomness (t, noise, dropout) is the same as uncached.
"""
import numpy as np
from mindspore import Tensor

from ldm.data.dataset import load_image, sample_rng


class LatentCache:
    def __init__(self, model, dataset, latent_shape, encode_text=False, batch_size=8, show_progress=True):
        self.model = model
        self.dataset = dataset
        self.latent_shape = tuple(latent_shape)
        self.encode_text = encode_text
        n = len(dataset)
        self.mean = np.zeros((n,) + self.latent_shape, np.float32)
        self.logvar = np.zeros((n,) + self.latent_shape, np.float32)
        self.context = None
        chunks = range(0, n, batch_size)
        if show_progress:
            from tqdm import tqdm
            chunks = tqdm(chunks, desc="caching latents", dynamic_ncols=True)
        contexts = []
        for start in chunks:
            recs = dataset.records[start:start + batch_size]
            images = np.stack([load_image(r.path, dataset.image_size) for r in recs])
            mean, logvar = model.encode_first_stage(Tensor(images))
            self.mean[start:start + len(recs)] = mean.asnumpy()
            self.logvar[start:start + len(recs)] = logvar.asnumpy()
            if not encode_text:
                contexts.append(self._encode_text([r.text for r in recs]))
        if not encode_text:
            self.context = np.concatenate(contexts)
            self.empty_context = self._encode_text([""])[0]

    def _encode_text(self, texts):
        tokens = Tensor(self.model.tokenize(texts).astype(np.int32))
        return self.model.get_learned_conditioning(tokens).asnumpy()

    def batch(self, indices, epoch, num_timesteps):
        draws = []
        for i in indices:
            rng = sample_rng(self.dataset.seed, epoch, int(i))
            draws.append(self.dataset.draws(rng, self.dataset.records[int(i)].text, num_timesteps, self.latent_shape))
        batch = {k: np.stack([d[k] for d in draws]) for k in draws[0] if k != "text"}
        batch["text"] = [d["text"] for d in draws]
        batch["index"] = np.asarray(indices, dtype=np.int64)
        batch["mean"] = self.mean[batch["index"]]
        batch["logvar"] = self.logvar[batch["index"]]
        return batch

    def cond(self, batch, encode_text):
        """Token ids (text encoder trained) or the cached contexts with dropped captions emptied."""
        if encode_text:
            return Tensor(self.model.tokenize(batch["text"]).astype(np.int32))
        ctx = self.context[batch["index"]].copy()
        ctx[batch["dropped"]] = self.empty_context
        return Tensor(ctx)
