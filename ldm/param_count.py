"""Parameter counts of the UNet, VAE and text encoder of a model config, by arithmetic (no model built).

The memory estimate needs the weights' size in memory before anything is loaded: a checkpoint file's size
is not it (an fp16 ``.safetensors`` of SD 2.1 is 2.6 GB on disk and 5.2 GB as the fp32 parameters here).
Each count mirrors one constructor (ldm/models/unet.py, autoencoder.py, text_encoder.py) block by block;
tests/test_memory_estimate.py checks them against the built models' parameter lists.
"""
from ldm.util import part_params


def conv(c_in, c_out, k=3):
    return c_in * c_out * k * k + c_out


def dense(c_in, c_out, bias=True):
    return c_in * c_out + (c_out if bias else 0)


# ---------------------------------------------------------------- UNet (ldm.models.unet.UNetModel)
def unet_params(p):
    mc, mult = int(p.get("model_channels", 320)), [int(m) for m in p.get("channel_mult", (1, 2, 4, 4))]
    nrb, depth = int(p.get("num_res_blocks", 2)), int(p.get("transformer_depth", 1))
    attn_res = [int(a) for a in p.get("attention_resolutions", (4, 2, 1))]
    context = p.get("context_dim")
    context = int(context[0] if isinstance(context, (list, tuple)) else context or 0)
    head_channels, num_heads = int(p.get("num_head_channels", -1)), int(p.get("num_heads", -1))
    emb = 4 * mc

    def res(c_in, c_out):
        skip = conv(c_in, c_out, 1) if c_in != c_out else 0
        return 2 * c_in + conv(c_in, c_out) + dense(emb, c_out) + 2 * c_out + conv(c_out, c_out) + skip

    def transformer(ch):
        heads = ch // head_channels if head_channels != -1 else num_heads
        d = heads * (head_channels if head_channels != -1 else ch // num_heads)
        kv = context or d
        block = (3 * d * d + dense(d, d)                          # attn1: q, k, v (no bias), to_out
                 + d * d + 2 * kv * d + dense(d, d)               # attn2: q from x, k and v from the context
                 + dense(d, 8 * d) + dense(4 * d, d)              # GEGLU feed-forward
                 + 3 * 2 * d)                                     # norm1..3
        return 2 * ch + dense(ch, d) + depth * block + dense(d, ch)   # proj_in/out: Dense or 1x1 conv alike

    n = dense(mc, emb) + dense(emb, emb) + conv(int(p.get("in_channels", 4)), mc)
    skips, ch, ds = [mc], mc, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            n += res(ch, m * mc) + (transformer(m * mc) if ds in attn_res else 0)
            ch = m * mc
            skips.append(ch)
        if level != len(mult) - 1:
            n += conv(ch, ch)
            skips.append(ch)
            ds *= 2
    n += 2 * res(ch, ch) + transformer(ch)
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nrb + 1):
            n += res(ch + skips.pop(), m * mc)
            ch = m * mc
            n += transformer(ch) if ds in attn_res else 0
            if level and i == nrb:
                n += conv(ch, ch)
                ds //= 2
    return n + 2 * ch + conv(mc, int(p.get("out_channels", 4)))


# ---------------------------------------------------------------- VAE (ldm.models.autoencoder.AutoencoderKL)
def vae_params(p):
    dd = p.get("ddconfig") or {}
    ch, mult = int(dd.get("ch", 128)), [int(m) for m in dd.get("ch_mult", (1, 2, 4, 4))]
    nrb, z = int(dd.get("num_res_blocks", 2)), int(dd.get("z_channels", 4))
    embed = int(p.get("embed_dim", 4))
    moments = 2 * z if dd.get("double_z", True) else z

    def res(c_in, c_out):
        return 2 * c_in + conv(c_in, c_out) + 2 * c_out + conv(c_out, c_out) + (conv(c_in, c_out, 1) if c_in != c_out else 0)

    def mid(c):
        return 2 * res(c, c) + 2 * c + 4 * conv(c, c, 1)

    n = conv(int(dd.get("in_channels", 3)), ch)                                    # encoder
    c = ch
    for i, m in enumerate(mult):
        for j in range(nrb):
            n += res(c if j == 0 else ch * m, ch * m)
        c = ch * m
        n += conv(c, c) if i != len(mult) - 1 else 0
    n += mid(c) + 2 * c + conv(c, moments)
    c = ch * mult[-1]                                                              # decoder
    n += conv(z, c) + mid(c)
    for i in reversed(range(len(mult))):
        for j in range(nrb + 1):
            n += res(c if j == 0 else ch * mult[i], ch * mult[i])
        c = ch * mult[i]
        n += conv(c, c) if i else 0
    n += 2 * c + conv(c, int(dd.get("out_ch", 3)))
    return n + conv(moments, 2 * embed, 1) + conv(embed, z, 1)                   # quant / post-quant convs


# ---------------------------------------------------------------- text encoder (ldm.models.text_encoder)
def text_params(p):
    width, layers = int(p.get("width", 768)), int(p.get("layers", 12))
    block = 2 * width + dense(width, 3 * width) + dense(width, width) + 2 * width + dense(width, 4 * width) \
        + dense(4 * width, width)
    return (int(p.get("vocab_size", 49408)) + int(p.get("context_length", 77))) * width + layers * block + 2 * width


def model_params(config):
    """{"unet", "vae", "text"} parameter counts of a model config (dict); a missing part counts 0."""
    counts = {}
    for name, key, fn in (("unet", "unet_config", unet_params), ("vae", "first_stage_config", vae_params),
                          ("text", "cond_stage_config", text_params)):
        params = part_params(config, key)
        counts[name] = fn(params) if params else 0
    return counts
