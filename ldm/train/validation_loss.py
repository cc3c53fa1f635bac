"""The validation loss: the training objective on held-out images, at fixed timesteps and fixed noise.

A training loss jumps with the timesteps and noise each batch happens to draw; to compare one step (or
one run) with another, every evaluation here uses the same draws: each held-out image is scored at
:data:`VALIDATION_TIMESTEPS_FRACTIONS` of the training timesteps [min_timestep, max_timestep) (the
centres of five equal bins of t) with noise and VAE noise keyed only by (seed, image), no caption
dropout, no crop or flip randomness, and none of the noise options (offset, multires, input
perturbation: they are training-time augmentations). The loss is the objective's loss (its loss_type
and Huber threshold) with its weights (min-SNR, debiased, the v-pred options as in training), averaged
over images and timesteps. Batches are the training batch size, one bucket each, so the graphs are the training
shapes' (a bucket's last batch is padded with weight-0 rows, which the mean leaves out).
"""
import numpy as np

VALIDATION_TIMESTEPS_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
VALIDATION_STREAM = 0x7A11D   # key word of the validation draws' generator


def split_validation(dataset, fraction, seed):
    """(train indices, validation indices) of ``dataset``: ``fraction`` of its distinct images (at least
    one, and at least one left to train on), chosen by ``seed``; every record of a held-out image (a
    repeat folder lists it several times) goes to validation once, the others stay in training."""
    from ldm.errors import UserError
    first = {}
    for i, rec in enumerate(dataset.records):
        first.setdefault(rec.path, i)
    paths = list(first)
    held = min(max(1, int(round(fraction * len(paths)))), len(paths) - 1)
    if held < 1:
        raise UserError(f"validation_split {fraction:g} leaves no image to train on ({len(paths)} distinct image(s))")
    chosen = np.random.default_rng([int(seed), VALIDATION_STREAM]).choice(len(paths), held, replace=False)
    held_paths = {paths[k] for k in chosen}
    train = [i for i, rec in enumerate(dataset.records) if rec.path not in held_paths]
    val = sorted(first[p] for p in held_paths)
    return train, val


class ValidationLoss:
    """``loss()`` of a TrainRun's model on ``dataset`` (see the module docstring). Host batches are
    built once and kept (the held-out set is small)."""

    def __init__(self, run, dataset):
        self.run = run
        self.dataset = dataset
        low, high = run.timestep_range()          # the training range (min_timestep, max_timestep)
        self.timesteps = [low + int(f * (high - low)) for f in VALIDATION_TIMESTEPS_FRACTIONS]
        self.batch_size = run.cfg.train_batch_size
        self._batches = None

    def batches(self):
        """[(host batch, real rows)] grouped by size, each of train_batch_size rows."""
        if self._batches is not None:
            return self._batches
        n = self.batch_size
        out = []
        for size, idx in self.dataset.indices_by_size():
            shape = self.run.latent_shape_of(size)
            for k in range(0, len(idx), n):
                part = idx[k:k + n]
                rows = part + [part[-1]] * (n - len(part))
                out.append((self._host_batch(rows, size, shape), len(part)))
        self._batches = out
        return out

    def _host_batch(self, rows, size, shape):
        from ldm.data.dataset import load_image
        ds = self.dataset
        images, texts, noise, vae_noise = [], [], [], []
        for i in rows:
            rng = np.random.default_rng([ds.seed, VALIDATION_STREAM, int(i)])
            images.append(load_image(ds.records[i].path, size))
            text, _ = ds.caption(rng, ds.records[i].text, 0)
            texts.append(text)
            noise.append(rng.standard_normal(shape).astype(np.float32))
            vae_noise.append(rng.standard_normal(shape).astype(np.float32))
        return dict(image=np.stack(images), text=texts, noise=np.stack(noise), vae_noise=np.stack(vae_noise),
                    index=np.asarray(rows, np.int64))

    def loss(self):
        """The mean weighted loss over every held-out image and every fixed timestep."""
        from mindspore import Tensor
        run = self.run
        total, count = 0.0, 0
        for batch, real in self.batches():
            mask = (np.arange(self.batch_size) < real).astype(np.float32)
            tokens = Tensor(run.model.tokenize(batch["text"]).astype(np.int32))
            latents, cond = run.step_fn.encode_images(Tensor(batch["image"]), tokens, Tensor(batch["vae_noise"]))
            noise = Tensor(batch["noise"])
            extra = run.extra_inputs(batch)           # an inpainting model's mask and masked latents
            for t_value in self.timesteps:
                t = np.full(self.batch_size, t_value, np.int32)
                terms = run.timestep_terms(t)
                _, per_sample = run.step_fn.evaluate(latents, cond, Tensor(t), noise, noise,
                                                     Tensor(terms.alphas_cumprod), Tensor(terms.huber_c),
                                                     Tensor((terms.weight * mask).astype(np.float32)),
                                                     *extra)
                total += float(per_sample.asnumpy()[:real].sum())
                count += real
        return total / max(count, 1)
