"""Training objective (target, loss, min-SNR weights), LR schedules and recipe parsing."""
import math
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from ldm.diffusion.schedule import NoiseSchedule
from ldm.errors import UserError
from ldm.train.config import OPTIONS, parse_config
from ldm.train.lr_schedule import build_lr_schedule
from ldm.train.trainer import DiffusionObjective, timestep_terms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FixedOutputModel(nn.Cell):
    """apply_model returns a fixed tensor (records x_t), so the loss is checkable by hand."""

    def __init__(self, output):
        super().__init__()
        self.output = Tensor(output)
        self.seen_x_t = None

    def apply_model(self, x_t, t, context):
        self.seen_x_t = x_t
        return self.output

    def get_learned_conditioning(self, tokens):
        return tokens


def _fixed_tensors():
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    noise = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    out = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    t = np.array([10, 700], np.int32)
    return x0, noise, out, t


def _loss(prediction_type, snr_gamma=0.0):
    sched = NoiseSchedule()
    x0, noise, out, t = _fixed_tensors()
    model = FixedOutputModel(out)
    obj = DiffusionObjective(model, prediction_type)
    terms = timestep_terms(sched, t, prediction_type, snr_gamma)
    loss, _ = obj(Tensor(x0), Tensor(np.zeros((2, 77, 8), np.float32)), Tensor(t), Tensor(noise), Tensor(noise),
                  *[Tensor(a) for a in (terms.alphas_cumprod, terms.huber_c, terms.weight)])
    return float(loss.asnumpy()), model.seen_x_t.asnumpy()


def _hand_abar(t):
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)[t]


def test_v_target_and_loss_equal_hand_computed_reference():
    x0, noise, out, t = _fixed_tensors()
    abar = _hand_abar(t)[:, None, None, None]
    v = np.sqrt(abar) * noise - np.sqrt(1 - abar) * x0
    expected = float(np.mean((out - v) ** 2))
    loss, x_t = _loss("v")
    assert abs(loss - expected) < 1e-6 * max(1.0, expected)
    np.testing.assert_allclose(x_t, np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise, atol=1e-6)


def test_switching_prediction_type_switches_the_target():
    x0, noise, out, t = _fixed_tensors()
    eps_loss, _ = _loss("eps")
    v_loss, _ = _loss("v")
    assert abs(eps_loss - float(np.mean((out - noise) ** 2))) < 1e-6
    assert abs(eps_loss - v_loss) > 1e-3


@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_min_snr_weights_equal_the_formula(prediction_type):
    sched = NoiseSchedule()
    t = np.array([0, 10, 300, 999])
    abar = _hand_abar(t)
    snr = abar / (1 - abar)
    gamma = 5.0
    expected = np.minimum(snr, gamma) / (snr if prediction_type == "eps" else snr + 1)
    weight = timestep_terms(sched, t, prediction_type, gamma)[1]
    np.testing.assert_allclose(weight, expected, rtol=1e-6)
    # and the weighted loss is the weighted mean of per-sample squared errors
    x0, noise, out, t2 = _fixed_tensors()
    a = _hand_abar(t2)
    target = noise if prediction_type == "eps" else \
        np.sqrt(a)[:, None, None, None] * noise - np.sqrt(1 - a)[:, None, None, None] * x0
    s = a / (1 - a)
    w = np.minimum(s, gamma) / (s if prediction_type == "eps" else s + 1)
    expected_loss = float(np.mean(w * ((out - target) ** 2).mean(axis=(1, 2, 3))))
    loss, _ = _loss(prediction_type, snr_gamma=gamma)
    assert abs(loss - expected_loss) < 1e-6 * max(1.0, expected_loss)


def test_min_snr_with_zero_terminal_snr_stays_finite():
    sched = NoiseSchedule(rescale_zero_snr=True)
    for kind in ("eps", "v"):
        w = timestep_terms(sched, np.array([999, 500]), kind, 5.0)[1]
        assert np.isfinite(w).all()


@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_debiased_estimation_weights_equal_kohyas_formula(prediction_type):
    """kohya-ss: eps loss x 1/sqrt(min(SNR, 1000)), v loss x 1/(min(SNR, 1000) + 1); with min-SNR the product."""
    sched = NoiseSchedule()
    t = np.array([0, 10, 300, 999])
    abar = _hand_abar(t)
    snr = np.minimum(abar / (1 - abar), 1000.0)
    expected = 1 / np.sqrt(snr) if prediction_type == "eps" else 1 / (snr + 1)
    weight = timestep_terms(sched, t, prediction_type, 0.0, debiased=True)[1]
    np.testing.assert_allclose(weight, expected, rtol=1e-6)
    both = timestep_terms(sched, t, prediction_type, 5.0, debiased=True)[1]
    np.testing.assert_allclose(both, expected * timestep_terms(sched, t, prediction_type, 5.0)[1], rtol=1e-6)
    # the eps weighting of the x0 error goes from SNR to sqrt(SNR): noisy steps gain relative weight
    assert weight[-1] / weight[0] > 10 if prediction_type == "eps" else weight[-1] > weight[0]
    zero = timestep_terms(NoiseSchedule(rescale_zero_snr=True), np.array([999, 500]), prediction_type, 0.0,
                          debiased=True)[1]
    assert np.isfinite(zero).all()


def test_lr_schedules():
    lrs = build_lr_schedule("cosine_decay", 1e-3, 1e-5, total_steps=110, warmup_steps=10)
    np.testing.assert_allclose(lrs[:10], 1e-3 * np.arange(1, 11) / 10, rtol=1e-6)
    assert abs(lrs[10] - 1e-3) < 1e-9 and abs(lrs[60] - (1e-5 + 0.5 * (1e-3 - 1e-5))) < 1e-8
    poly = build_lr_schedule("polynomial_decay", 1.0, 0.0, total_steps=10, decay_steps=4)
    np.testing.assert_allclose(poly[:6], [1.0, 0.75, 0.5, 0.25, 0.0, 0.0], atol=1e-7)
    assert (build_lr_schedule("constant", 2e-4, 0, 5) == np.float32(2e-4)).all()
    with pytest.raises(UserError, match="unknown scheduler"):
        build_lr_schedule("step", 1, 0, 5)


def _recipe(tmp_path, text, name="recipe.yaml"):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "model.yaml").write_text("model: {}\n")
    path = tmp_path / name
    path.write_text(f"model_config: {tmp_path / 'model.yaml'}\ndata_path: {tmp_path / 'data'}\n" + text)
    return str(path)


MINDONE_KEYS = ("model_config, pretrained_model_path, data_path, output_path, image_size, train_batch_size, "
                "start_learning_rate, end_learning_rate, warmup_steps, decay_steps, scheduler, epochs, use_ema, "
                "optim, betas, weight_decay, gradient_accumulation_steps, clip_grad, max_grad_norm, "
                "init_loss_scale, loss_scale_factor, scale_window, drop_overflow_update, ckpt_save_interval, "
                "step_mode, random_crop, seed, use_parallel, dataset_sink_mode, use_lora, lora_rank, "
                "lora_ft_unet, lora_ft_text_encoder, resume").split(", ")


def test_recipe_keys_cli_wins_and_unknown_key_is_named(tmp_path):
    assert set(MINDONE_KEYS) <= set(OPTIONS)
    path = _recipe(tmp_path, "image_size: 64\nepochs: 3\nbetas: [0.8, 0.99]\nuse_ema: True\n"
                             "prediction_type: velocity\n")
    cfg = parse_config(["--train_config", path, "--epochs", "7"])
    assert (cfg.image_size, cfg.epochs, cfg.betas, cfg.use_ema, cfg.prediction_type) == (64, 7, [0.8, 0.99], True, "v")
    bad = _recipe(tmp_path, "image_sise: 64\n", "bad.yaml")
    with pytest.raises(UserError, match="image_sise"):
        parse_config(["--train_config", bad])
    with pytest.raises(UserError, match="scheduler must be one of"):
        parse_config(["--train_config", path, "--scheduler", "linear"])


def test_help_explains_every_flag():
    """Every option has a flag in -h (the CLI's own -h output: tests/test_readme.py)."""
    from ldm.train.config import build_parser
    out = build_parser().format_help()
    for name in OPTIONS:
        assert f"--{name}" in out


def test_shipped_recipes_parse():
    from ldm.train.config import read_recipe
    folder = os.path.join(REPO, "configs", "train")
    from ldm.train import textual_inversion
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
    ti_names = [n for n in names if "textual_inversion" in n]      # train_textual_inversion.py's recipes
    assert {"train_config_textual_inversion_v1.yaml", "train_config_textual_inversion_v2.yaml"} <= set(ti_names)
    for name in ti_names:
        assert textual_inversion.read_recipe(os.path.join(folder, name))["placeholder_token"]
    from ldm.train import dreambooth
    db_names = [n for n in names if "dreambooth" in n]              # train_dreambooth.py's recipes
    assert {"train_config_dreambooth_v2.yaml", "train_config_dreambooth_lora_v2.yaml",
            "train_config_dreambooth_vanilla_v2.yaml"} <= set(db_names)
    for name in db_names:
        dreambooth.read_recipe(os.path.join(folder, name))
    from ldm.train import controlnet
    cn_names = [n for n in names if "controlnet" in n]              # train_controlnet.py's recipes
    for name in cn_names:
        controlnet.read_recipe(os.path.join(folder, name))
    recipes = {name: read_recipe(os.path.join(folder, name)) for name in names
               if name not in ti_names + db_names + cn_names}
    assert {"train_config_vanilla_v2_vpred.yaml", "train_config_vanilla_v2.yaml", "train_config_lora_v2_vpred.yaml",
            "train_config_tiny_vpred.yaml"} <= set(recipes)
    # MindONE's own v-pred recipe (shipped unchanged) gets "v" from its model config, as in MindONE
    vpred = recipes["train_config_vanilla_v2_vpred.yaml"]
    from ldm.util import load_config, model_section
    assert model_section(load_config(os.path.join(REPO, vpred["model_config"])))["prediction_type"] == "v"
    assert vpred["image_size"] == 768
    assert recipes["train_config_vanilla_v2.yaml"]["prediction_type"] == "eps"
    assert recipes["train_config_vanilla_v2.yaml"]["image_size"] == 512
    assert recipes["train_config_lora_v2_vpred.yaml"]["use_lora"] is True
    for recipe in recipes.values():
        assert os.path.isfile(os.path.join(REPO, recipe["model_config"])) or "v2" in recipe["model_config"]


def test_adamw_and_ema_follow_their_formulas():
    from mindspore import Parameter
    from ldm.train.ema import EMA
    from ldm.train.optim import AdamW
    w0 = np.array([[0.5, -1.0], [2.0, 0.1]], np.float32)
    p = Parameter(Tensor(w0.copy()), name="w")
    opt, ema = AdamW([p], (0.9, 0.99), 1e-8, 0.1), EMA([p], decay=0.5)
    w, m, v, shadow = w0.astype(np.float64), 0.0, 0.0, w0.astype(np.float64)
    for step in range(1, 4):
        g = np.full_like(w, 0.3 * step) - w
        lr = 0.01 * step
        opt((Tensor(g.astype(np.float32)),), Tensor(np.float32(lr)))
        ema.update()
        w = w * (1 - lr * 0.1)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        w = w - lr / (1 - 0.9 ** step) * m / (np.sqrt(v / (1 - 0.99 ** step)) + 1e-8)
        decay = min(0.5, (1 + step) / (10 + step))
        shadow = shadow - (1 - decay) * (shadow - w)
        np.testing.assert_allclose(p.asnumpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ema.shadow[0].asnumpy(), shadow, rtol=1e-5, atol=1e-6)
    with ema.swapped():
        np.testing.assert_allclose(p.asnumpy(), shadow, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.asnumpy(), w, rtol=1e-5, atol=1e-6)
