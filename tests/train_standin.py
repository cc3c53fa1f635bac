"""A tiny stand-in with LatentDiffusion's interface (ldm.models.latent_diffusion), for training tests
that must not depend on the real model's size: conv "VAE" (8x down), hashed-character "text
encoder", and a small UNet-like net with one cross-attention block (to_q/to_k/to_v/to_out.0)."""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ldm.diffusion.spec import DiffusionSpec


class CrossAttention(nn.Cell):
    def __init__(self, dim, context_dim):
        super().__init__()
        self.to_q = nn.Dense(dim, dim, has_bias=False)
        self.to_k = nn.Dense(context_dim, dim, has_bias=False)
        self.to_v = nn.Dense(context_dim, dim, has_bias=False)
        self.to_out = nn.SequentialCell([nn.Dense(dim, dim)])
        self.scale = dim ** -0.5

    def construct(self, x, context):
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        attn = ops.softmax(ops.bmm(q, k.transpose(0, 2, 1)) * self.scale, axis=-1)
        return self.to_out(ops.bmm(attn, v))


class TinyUNet(nn.Cell):
    def __init__(self, channels=4, width=16, context_dim=8):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, width, 3, pad_mode="pad", padding=1, has_bias=True)
        self.time_embed = nn.Dense(1, width)
        self.attn1 = CrossAttention(width, context_dim)
        self.conv_out = nn.Conv2d(width, channels, 3, pad_mode="pad", padding=1, has_bias=True)

    def construct(self, x, t, context):
        h = self.conv_in(x)
        temb = self.time_embed(t.astype(ms.float32).reshape((-1, 1)) / 1000.0)
        h = h + temb.reshape(temb.shape + (1, 1))
        n, c, hh, ww = h.shape
        seq = h.reshape((n, c, hh * ww)).transpose(0, 2, 1)
        seq = seq + self.attn1(seq, context)
        h = seq.transpose(0, 2, 1).reshape((n, c, hh, ww))
        return self.conv_out(ops.silu(h))


class Wrapper(nn.Cell):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet


class TinyVAE(nn.Cell):
    def __init__(self, channels=4):
        super().__init__()
        self.encoder = nn.Conv2d(3, 2 * channels, 8, stride=8, pad_mode="valid", has_bias=True)
        self.decoder = nn.Conv2dTranspose(channels, 3, 8, stride=8, pad_mode="valid", has_bias=True)


class TinyText(nn.Cell):
    def __init__(self, dim=8, vocab=64):
        super().__init__()
        self.embedding_table = ms.Parameter(ms.Tensor(np.random.default_rng(0).normal(0, 1, (vocab, dim))
                                                      .astype(np.float32)), name="embedding_table")
        self.q_proj = nn.Dense(dim, dim)
        self.vocab = vocab

    def tokenize(self, prompts):
        ids = np.zeros((len(prompts), 77), np.int32)
        for i, p in enumerate(prompts):
            codes = [1 + (ord(ch) % (self.vocab - 1)) for ch in p[:77]]
            ids[i, :len(codes)] = codes
        return ids

    def construct(self, ids):
        return self.q_proj(ops.gather(self.embedding_table, ids, 0))


class StandInLDM(nn.Cell):
    def __init__(self, spec=None):
        super().__init__()
        self.model = Wrapper(TinyUNet())
        self.first_stage_model = TinyVAE()
        self.cond_stage_model = TinyText()
        self.set_spec(spec or DiffusionSpec(prediction_type="v", scale_factor=0.5))

    def set_spec(self, spec):
        self.spec = spec
        self.scale_factor = spec.scale_factor

    @property
    def prediction_type(self):
        return self.spec.prediction_type

    @property
    def schedule(self):
        return self.spec.schedule

    @property
    def diffusion_model(self):
        return self.model.diffusion_model

    def tokenize(self, prompts):
        return self.cond_stage_model.tokenize(prompts)

    def get_learned_conditioning(self, tokens):
        return self.cond_stage_model(tokens)

    def apply_model(self, x_t, t, context):
        return self.model.diffusion_model(x_t, t, context)

    def encode_first_stage(self, x):
        moments = self.first_stage_model.encoder(x)
        mean, logvar = ops.split(moments, moments.shape[1] // 2, axis=1)
        return mean, ops.clamp(logvar, -30.0, 20.0)

    def get_first_stage_encoding(self, mean, logvar, noise=None):
        z = mean if noise is None else mean + ops.exp(0.5 * logvar) * noise
        return z * self.scale_factor

    def decode_first_stage(self, z):
        return self.first_stage_model.decoder(z / self.scale_factor)


STANDIN_YAML = """model:
  target: tests.train_standin.StandInLDM
  prediction_type: v
  params:
    scale_factor: 0.5
    linear_start: 0.00085
    linear_end: 0.012
    timesteps: 1000
"""


def write_standin_config(folder):
    import os
    path = os.path.join(str(folder), "standin.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(STANDIN_YAML)
    return path


def make_shapes(folder, num_train=16, size=32):
    """The synthetic-shapes train split (coloured shapes + captions) in ``folder``/train."""
    import os
    from datasets.synthetic_shapes import make_dataset
    make_dataset(str(folder), num_train=num_train, num_test=2, size=size, seed=0)
    return os.path.join(str(folder), "train")
