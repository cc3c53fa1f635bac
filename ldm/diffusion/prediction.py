"""The one place where eps / v / x0 / score are converted into each other, and training targets are made.

With x_t = alpha x0 + sigma eps (alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t)):
    v     = alpha eps - sigma x0
    x0    = alpha x_t - sigma v   = (x_t - sigma eps) / alpha
    eps   = alpha v + sigma x_t   = (x_t - alpha x0) / sigma
    score = -eps / sigma
Every conversion is linear in (x_t, model_output), so it is expressed as a pair of coefficients
(c_x, c_out) with target = c_x * x_t + c_out * output. Samplers precompute these per step (float64 on the
host) and apply them to numpy arrays or MindSpore Tensors alike; training uses the same functions.
"""
import numpy as np

from ldm.diffusion import xp

PREDICTION_TYPES = ("eps", "v", "x0")
# the one alias table: ours, diffusers' (epsilon, v_prediction, sample) and MindONE's (velocity; "noise" in
# its v2-inpaint-inference.yaml)
_ALIASES = {"eps": "eps", "epsilon": "eps", "noise": "eps", "v": "v", "v_prediction": "v", "velocity": "v",
            "x0": "x0", "sample": "x0"}
DIFFUSERS_NAMES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def normalize_prediction_type(name):
    """'epsilon'/'eps' -> 'eps', 'v'/'v_prediction'/'velocity' -> 'v', 'x0'/'sample' -> 'x0'."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        # a plain ValueError: this also runs inside compiled graphs, which raise only builtin types
        raise ValueError(f"unknown prediction_type {name!r}; use 'eps', 'v' or 'x0'")
    return _ALIASES[key]


def coefficients(prediction_type, target, alpha, sigma):
    """(c_x, c_out) with ``target = c_x * x_t + c_out * model_output``.

    alpha, sigma: floats or float64 arrays (sqrt(abar_t), sqrt(1 - abar_t)). target in eps|v|x0|score.
    """
    kind = normalize_prediction_type(prediction_type)
    alpha = np.asarray(alpha, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if target == "score":
            c_x, c_out = coefficients(kind, "eps", alpha, sigma)
            return -c_x / sigma, -c_out / sigma
        target = normalize_prediction_type(target)
        zero, one = np.zeros_like(alpha), np.ones_like(alpha)
        table = {
            ("eps", "eps"): (zero, one),
            ("eps", "x0"): (1.0 / alpha, -sigma / alpha),
            ("eps", "v"): (-sigma / alpha, (alpha ** 2 + sigma ** 2) / alpha),
            ("v", "v"): (zero, one),
            ("v", "x0"): (alpha, -sigma),
            ("v", "eps"): (sigma, alpha),
            ("x0", "x0"): (zero, one),
            ("x0", "eps"): (1.0 / sigma, -alpha / sigma),
            ("x0", "v"): (alpha / sigma, -(alpha ** 2 + sigma ** 2) / sigma),
        }
        c_x, c_out = table[(kind, target)]
    if c_x.ndim == 0:
        return float(c_x), float(c_out)
    return c_x, c_out


def convert(prediction_type, target, model_output, x_t, alpha, sigma):
    """Convert a model output to ``target`` (eps|v|x0|score). alpha/sigma: Python floats, or per-sample
    arrays/Tensors [N] (then they broadcast against x_t [N, ...])."""
    if isinstance(alpha, (float, int)) and isinstance(sigma, (float, int)):
        c_x, c_out = coefficients(prediction_type, target, alpha, sigma)
        if c_x == 0.0:
            return c_out * model_output if c_out != 1.0 else model_output
        return c_x * x_t + c_out * model_output
    alpha = xp.broadcast_to_sample(alpha, x_t)
    sigma = xp.broadcast_to_sample(sigma, x_t)
    return _convert_arrays(normalize_prediction_type(prediction_type), target, model_output, x_t, alpha, sigma)


def _convert_arrays(kind, target, out, x, a, s):
    if target == "score":
        return -_convert_arrays(kind, "eps", out, x, a, s) / s
    target = normalize_prediction_type(target)
    if kind == target:
        return out
    if kind == "eps":
        x0 = (x - s * out) / a
        return x0 if target == "x0" else a * out - s * x0
    if kind == "v":
        return a * x - s * out if target == "x0" else a * out + s * x
    eps = (x - a * out) / s          # kind == "x0"
    return eps if target == "eps" else a * eps - s * out


def to_x0(prediction_type, model_output, x_t, alpha, sigma):
    return convert(prediction_type, "x0", model_output, x_t, alpha, sigma)


def to_eps(prediction_type, model_output, x_t, alpha, sigma):
    return convert(prediction_type, "eps", model_output, x_t, alpha, sigma)


def to_v(prediction_type, model_output, x_t, alpha, sigma):
    return convert(prediction_type, "v", model_output, x_t, alpha, sigma)


def to_score(prediction_type, model_output, x_t, alpha, sigma):
    return convert(prediction_type, "score", model_output, x_t, alpha, sigma)


def get_target(prediction_type, x0, noise, alphas_cumprod_t):
    """Training target for a model that predicts ``prediction_type`` from x_t = add_noise(x0, noise, t).

    alphas_cumprod_t: abar at each sample's timestep, [N] or [N, 1, ...] (numpy or Tensor), or a float.
    eps -> noise; x0 -> x0; v -> sqrt(abar) noise - sqrt(1 - abar) x0.
    """
    kind = normalize_prediction_type(prediction_type)
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    abar = xp.broadcast_to_sample(alphas_cumprod_t, x0)
    return abar ** 0.5 * noise - (1.0 - abar) ** 0.5 * x0


def min_snr_weight(snr, gamma, prediction_type):
    """Min-SNR-gamma loss weight (Hang et al. 2023) for an MSE on the given prediction target:
    eps: min(SNR, g) / SNR;  v: min(SNR, g) / (SNR + 1);  x0: min(SNR, g).  snr: array/Tensor [N]."""
    kind = normalize_prediction_type(prediction_type)
    clipped = xp.minimum(snr, float(gamma)) if not isinstance(snr, (float, int)) else min(snr, gamma)
    if kind == "eps":
        return clipped / snr
    if kind == "v":
        return clipped / (snr + 1.0)
    return clipped


def debiased_weight(snr, prediction_type):
    """Debiased-estimation loss weight (Yu et al. 2024; kohya-ss's ``--debiased_estimation_loss``):
    eps: 1 / sqrt(SNR);  v: 1 / (SNR + 1);  x0: sqrt(SNR) (the eps weighting of the x0 error), with SNR
    clipped to [1e-3, 1000]. The plain eps MSE weights the x0 error by SNR; this weights it by sqrt(SNR),
    which moves weight to the noisy steps, where layout (position, background) is decided."""
    kind = normalize_prediction_type(prediction_type)
    clipped = xp.clip(snr, 1e-3, 1000.0) if not isinstance(snr, (float, int)) else min(max(snr, 1e-3), 1000.0)
    if kind == "v":
        return 1.0 / (clipped + 1.0)
    if kind == "x0":
        return clipped ** 0.5
    return 1.0 / clipped ** 0.5


KOHYA_SNR_CLIP = 1000.0     # kohya-ss's get_snr_scale: SNR limited to 1000 (t = 0 has a large SNR)


def v_as_noise_weight(snr):
    """kohya-ss's ``--scale_v_pred_loss_like_noise_pred`` for a v loss: x SNR' / (SNR' + 1), SNR' = min(SNR,
    1000). For one prediction the v error is the eps error / sqrt(abar), so |eps err|^2 = |v err|^2 * SNR /
    (SNR + 1): the v loss then weighs the timesteps as an eps loss does. Zero SNR gives weight 0."""
    clipped = xp.minimum(snr, KOHYA_SNR_CLIP) if not isinstance(snr, (float, int)) else min(snr, KOHYA_SNR_CLIP)
    return clipped / (clipped + 1.0)


def v_like_loss_weight(snr, strength):
    """kohya-ss's ``--v_pred_like_loss k`` for an eps loss L: L + k * L / scale with scale =
    :func:`v_as_noise_weight`, i.e. x (1 + k (SNR' + 1) / SNR'): adds k times the loss a v model would have
    for the same prediction. Infinite at SNR 0 (refused before training: an eps model at zero SNR)."""
    return 1.0 + strength / v_as_noise_weight(snr)
