"""The attention switch (ldm/models/attention_ops.py): chunked == standard forward and backward (fp32 and fp16),
auto's choice by size, the flash call through a stand-in with FlashAttentionScore's documented semantics
(tests/flash_standin.py), the fallback notice where no kernel exists, and how configs and flags select it."""
import numpy as np
import pytest

import mindspore as ms

import flash_standin
from ldm.models import attention_ops
from ldm.models.attention import CrossAttention
from ldm.models.attention_ops import AttentionSettings, ScaledDotProductAttention


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    attention_ops.set_flash_kernel(None)
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _inputs(rng, b, n, m, heads, d, dtype=np.float32):
    q = rng.standard_normal((b, n, heads * d)).astype(dtype)
    k = rng.standard_normal((b, m, heads * d)).astype(dtype)
    v = rng.standard_normal((b, m, heads * d)).astype(dtype)
    w = rng.standard_normal((b, n, heads * d)).astype(np.float32)
    return q, k, v, w


def _forward_and_grads(att, q, k, v, w):
    """Output and d(sum(out * w))/d(q, k, v), all compiled (ms.jit)."""
    w = ms.Tensor(w)

    def loss(q, k, v):
        return (att(q, k, v).astype(ms.float32) * w).sum()

    out = ms.jit(att.construct)(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v))
    grads = ms.jit(ms.grad(loss, grad_position=(0, 1, 2)))(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v))
    return [out.asnumpy().astype(np.float32)] + [g.asnumpy().astype(np.float32) for g in grads]


@pytest.mark.parametrize("n,m,chunk", [(50, 50, 7), (50, 50, 50), (64, 77, 16), (33, 77, None)],
                         ids=["self-uneven", "self-one-chunk", "cross", "cross-auto"])
def test_chunked_equals_standard_forward_and_gradients_fp32(n, m, chunk):
    q, k, v, w = _inputs(np.random.default_rng(n + m), 2, n, m, 3, 16)
    ref = _forward_and_grads(ScaledDotProductAttention(3, 16, upcast=True, settings=AttentionSettings("standard")),
                             q, k, v, w)
    got = _forward_and_grads(ScaledDotProductAttention(3, 16, upcast=True,
                                                       settings=AttentionSettings("chunked", chunk)), q, k, v, w)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        assert np.abs(a - b).max() <= 1e-5, (name, np.abs(a - b).max())


@pytest.mark.parametrize("upcast", [True, False])
def test_chunked_fp16_stays_fp16_and_matches_standard(upcast):
    """fp16 q, k, v: output fp16, softmax fp32 in both paths; chunked differs from standard only by fp16
    rounding of the returned values (the bprop keeps P, dP, dS in fp32)."""
    q, k, v, w = _inputs(np.random.default_rng(1), 2, 40, 40, 2, 16, np.float16)
    std = ScaledDotProductAttention(2, 16, upcast=upcast, settings=AttentionSettings("standard"))
    chk = ScaledDotProductAttention(2, 16, upcast=upcast, settings=AttentionSettings("chunked", 9))
    out = ms.jit(chk.construct)(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v))
    assert out.dtype == ms.float16
    ref, got = _forward_and_grads(std, q, k, v, w), _forward_and_grads(chk, q, k, v, w)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        scale = max(1.0, np.abs(b).max())
        assert np.abs(a - b).max() <= 4e-3 * scale, (name, np.abs(a - b).max())


def test_auto_chooses_by_the_size_of_the_scores():
    att = ScaledDotProductAttention(5, 64, settings=AttentionSettings("auto"))
    budget_rows = attention_ops.CHUNK_BUDGET_BYTES // (4 * 2 * 5 * 4096)
    assert att.path_for(2, 4096, 77) == "standard"                  # cross-attention: tiny scores
    assert att.path_for(2, 4096, 4096) == "chunked"                  # 4 x 2 x 5 x 4096^2 = 671 MB > 512 MiB
    assert att.path_for(1, 4096, 4096) == "standard"                 # 335 MB
    assert attention_ops.auto_chunk_rows(2 * 5, 4096) == budget_rows
    assert ScaledDotProductAttention(5, 64, settings=AttentionSettings("standard")).path_for(8, 9216, 9216) == "standard"
    # what one call holds at a time, as the memory estimate counts it
    assert attention_ops.peak_scores_bytes("standard", 8, 5, 9216, 9216) == 4 * 8 * 5 * 9216 ** 2
    assert attention_ops.peak_scores_bytes("chunked", 8, 5, 9216, 9216) <= attention_ops.CHUNK_BUDGET_BYTES
    assert attention_ops.peak_scores_bytes("chunked", 1, 5, 9216, 9216, chunk=100) == 4 * 5 * 100 * 9216


@pytest.mark.parametrize("dim_head,padded,dtype", [(64, 64, np.float32), (40, 64, np.float32), (80, 80, np.float16)],
                         ids=["sd2-head", "sd1-head-padded", "fp16-model"])
def test_flash_call_through_the_standin(dim_head, padded, dtype):
    """With a kernel present, 'flash' calls it with MindONE's arguments: BSH layout, head_num, scale_value
    D^-1/2 of the real head size, keep_prob 1, fp16 inputs with the head zero-padded to a size the kernel
    takes; the result (padding sliced off, back in the model's dtype) equals standard attention up to fp16
    rounding of q, k, v."""
    attention_ops.set_flash_kernel(flash_standin.factory)
    flash_standin.CALLS.clear()
    heads, n, m = 2, 24, 77
    q, k, v, _ = _inputs(np.random.default_rng(dim_head), 2, n, m, heads, dim_head, dtype)
    att = ScaledDotProductAttention(heads, dim_head, settings=AttentionSettings("flash"))
    assert att.mode == "flash"
    out = ms.jit(att.construct)(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v))
    assert out.dtype == (ms.float16 if dtype == np.float16 else ms.float32) and out.shape == q.shape
    call, = flash_standin.CALLS
    assert call["input_layout"] == "BSH" and call["head_num"] == heads and call["keep_prob"] == 1.0
    assert call["scale_value"] == pytest.approx(dim_head ** -0.5) and call["head_dim"] == padded
    assert call["dtype"] == "float16" and call["query"] == (2, n, heads * padded) and call["key"] == (2, m, heads * padded)
    ref = flash_standin.reference(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), heads,
                                  dim_head ** -0.5, "BSH")
    assert np.abs(out.asnumpy().astype(np.float64) - ref).max() <= 2e-3


def test_flash_in_a_unet_block_compiles_and_matches_standard():
    """A CrossAttention (self and cross) in graph mode takes the flash path for both calls."""
    attention_ops.set_flash_kernel(flash_standin.factory)
    flash_standin.CALLS.clear()
    rng = np.random.default_rng(3)
    x = ms.Tensor(rng.standard_normal((2, 16, 64)).astype(np.float32))
    ctx = ms.Tensor(rng.standard_normal((2, 77, 32)).astype(np.float32))
    outs = {}
    for mode in ("standard", "flash"):
        ms.set_seed(0)
        cell = CrossAttention(64, 32, heads=2, dim_head=32, attention=AttentionSettings(mode))
        outs[mode] = ms.jit(cell.construct)(x, ctx).asnumpy()
    assert len(flash_standin.CALLS) == 1 and flash_standin.CALLS[0]["head_dim"] == 64    # 32 padded to 64
    assert np.abs(outs["flash"] - outs["standard"]).max() <= 5e-3 * max(1.0, np.abs(outs["standard"]).max())


def test_flash_without_a_kernel_is_chunked_with_one_notice():
    settings = AttentionSettings("flash")
    att = ScaledDotProductAttention(2, 32, settings=settings)
    assert att.mode == "chunked" and att.flash is None
    line = attention_ops.describe(settings, "CPU")
    assert line.startswith("attention flash: there is no flash-attention kernel on CPU") and "chunked" in line
    assert "\n" not in line
    assert attention_ops.describe(settings, "CPU", "enable_flash_attention").startswith("enable_flash_attention: ")
    # a head too large for the kernel (the VAE's single 512-wide head) is chunked even where flash exists
    attention_ops.set_flash_kernel(flash_standin.factory)
    assert ScaledDotProductAttention(1, 512, settings=settings).mode == "chunked"
    auto = ScaledDotProductAttention(5, 64, settings=AttentionSettings("auto"))
    assert auto.path_for(2, 4096, 4096, ms.float16) == "flash"          # an fp16 model on a device with the kernel
    assert auto.path_for(2, 4096, 4096, ms.float32) == "chunked"        # fp32 keeps fp32 attention under auto
    assert auto.path_for(2, 4096, 77, ms.float32) == "standard"


def test_config_keys_and_flags_select_the_mode():
    def config(**unet):
        return {"model": {"params": {"unet_config": {"params": unet}}}}
    from_config = attention_ops.settings_from_config
    assert from_config(config()) == AttentionSettings("auto")
    assert from_config(config(enable_flash_attention=True)).mode == "flash"              # MindONE's key
    assert from_config(config(enable_flash_attention=True, attention="standard")).mode == "standard"
    assert from_config(config(attention="chunked", attention_chunk=64)) == AttentionSettings("chunked", 64)
    assert from_config(config(attention="chunked"), attention="standard").mode == "standard"   # the flag wins
    assert from_config(config(), enable_flash_attention=True).mode == "flash"
    assert from_config(config(enable_flash_attention=True), enable_flash_attention=False).mode == "auto"
    for bad, text in ((dict(attention="nonsense"), "choose one of auto, standard, chunked, flash"),
                      (dict(attention="chunked", attention_chunk=0), "positive whole number"),
                      (dict(attention="chunked", attention_chunk=-3), "positive whole number"),
                      (dict(attention="chunked", attention_chunk=float("nan")), "positive whole number")):
        with pytest.raises(attention_ops.AttentionSettingsError, match=text):
            from_config(config(**bad))


def test_model_set_attention_reaches_the_unet_and_the_vae():
    from ldm.models.latent_diffusion import build_model
    from ldm.util import load_config
    cfg = load_config("configs/tiny-v2-vpred.yaml")
    cfg["model"]["params"]["unet_config"]["params"]["attention"] = "standard"
    model = build_model(cfg, lazy_init=True)
    cells = attention_ops.attention_cells(model)
    vae_cells = attention_ops.attention_cells(model.first_stage_model)
    assert cells and vae_cells and {c.mode for c in cells} == {"standard"}
    model.set_attention(AttentionSettings("chunked", 8))
    assert {(c.mode, c.chunked.chunk) for c in cells} == {("chunked", 8)}
    names = {p.name for p in model.get_parameters()}
    assert not any("attention." in n for n in names)     # the switch holds no parameters: names unchanged


def test_text_to_image_flash_on_cpu_is_one_notice(tmp_path, caplog):
    """text_to_image.py --attention flash (or MindONE's --enable_flash_attention) on CPU: every check passes
    and exactly one notice line says flash falls back to chunked; the settings reach the pipeline."""
    import logging

    import text_to_image
    base = ["--config", "configs/tiny-shapes-v2.yaml", "--ckpt_path", "models/tiny_shapes_base.ckpt", "--W", "32",
            "--H", "32", "--n_samples", "1", "--n_iter", "1", "--output_path", str(tmp_path / "out")]
    for extra, label in ((["--attention", "flash"], "attention flash"),
                         (["--enable_flash_attention", "True"], "enable_flash_attention")):
        caplog.clear()
        args = text_to_image.build_parser().parse_args(base + extra)
        with caplog.at_level(logging.INFO):
            text_to_image.settings_from_args(args)
            text_to_image.log_startup_notes(args)
        notices = [r.getMessage() for r in caplog.records if "flash-attention kernel" in r.getMessage()]
        assert len(notices) == 1 and notices[0].startswith(f"{label}: there is no flash-attention kernel on CPU")
        assert args.attention_settings == AttentionSettings("flash")
    caplog.clear()
    args = text_to_image.build_parser().parse_args(base)
    with caplog.at_level(logging.INFO):
        text_to_image.settings_from_args(args)
        text_to_image.log_startup_notes(args)
    assert not [r for r in caplog.records if "attention" in r.getMessage()]      # auto: nothing to say
