"""``--cache_latents``: encode every image (and caption) once with the frozen VAE / text encoder.

The cache holds the VAE posterior (mean, logvar) per image, so each epoch still draws a fresh latent
sample z = mean + exp(logvar / 2) * noise, and, when the text encoder is frozen, the context of every
caption plus the empty prompt (for caption dropout). Images are center-cropped once (to their bucket
with aspect-ratio buckets, encoded bucket by bucket): random crop and flip do not apply to cached runs.
Per-sample randomness (t, noise, dropout) is the same as uncached. Caption shuffle and tag dropout
change the text every epoch, so with them the text encoder runs at each step (``encode_text``).
"""
import numpy as np
from mindspore import Tensor

from ldm.data.dataset import load_image, sample_rng


class LatentCache:
    def __init__(self, model, dataset, latent_shape, encode_text=False, batch_size=8, show_progress=True):
        """``latent_shape(size) -> (C, h, w)`` of the latents of a (width, height) image; ``encode_text``:
        do not cache the captions' contexts (the text encoder trains, or the captions change)."""
        self.model = model
        self.dataset = dataset
        self.latent_shape = latent_shape
        self.encode_text = encode_text
        n = len(dataset)
        self.mean, self.logvar = [None] * n, [None] * n    # per record: its bucket's latent shape
        self.context = None
        chunks = [(size, idx[k:k + batch_size]) for size, idx in dataset.indices_by_size()
                  for k in range(0, len(idx), batch_size)]
        if show_progress:
            from tqdm import tqdm
            chunks = tqdm(chunks, desc="caching latents", dynamic_ncols=True)
        contexts = np.zeros(n, dtype=object)
        for size, idx in chunks:
            images = np.stack([load_image(dataset.records[i].path, size) for i in idx])
            mean, logvar = model.encode_first_stage(Tensor(images))
            mean, logvar = mean.asnumpy(), logvar.asnumpy()
            for j, i in enumerate(idx):
                self.mean[i], self.logvar[i] = mean[j], logvar[j]
            if not encode_text:
                ctx = self._encode_text([dataset.records[i].text for i in idx])
                for j, i in enumerate(idx):
                    contexts[i] = ctx[j]
        if not encode_text:
            self.context = np.stack(list(contexts))
            self.empty_context = self._encode_text([""])[0]

    def _encode_text(self, texts):
        tokens = Tensor(self.model.tokenize(texts).astype(np.int32))
        return self.model.get_learned_conditioning(tokens).asnumpy()

    def batch(self, indices, epoch, num_timesteps, copies=None):
        copies = np.zeros(len(indices), np.int64) if copies is None else copies
        draws = []
        for i, c in zip(indices, copies):
            rng = sample_rng(self.dataset.seed, epoch, int(i), int(c))
            shape = self.latent_shape(self.dataset.size_of(int(i)))
            draws.append(self.dataset.draws(rng, self.dataset.records[int(i)].text, num_timesteps, shape, epoch))
        batch = {k: np.stack([d[k] for d in draws]) for k in draws[0] if k != "text"}
        batch["text"] = [d["text"] for d in draws]
        batch["index"] = np.asarray(indices, dtype=np.int64)
        batch["mean"] = np.stack([self.mean[i] for i in batch["index"]])
        batch["logvar"] = np.stack([self.logvar[i] for i in batch["index"]])
        return batch

    def cond(self, batch, encode_text):
        """Token ids (text encoder trained), the contexts of this batch's captions (not cached: they
        change every epoch), or the cached contexts with dropped captions emptied."""
        if encode_text:
            return Tensor(self.model.tokenize(batch["text"]).astype(np.int32))
        if self.context is None:
            return Tensor(self._encode_text(batch["text"]))
        ctx = self.context[batch["index"]].copy()
        ctx[batch["dropped"]] = self.empty_context
        return Tensor(ctx)
