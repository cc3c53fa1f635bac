"""Sampler accuracy on an analytic model, ours next to diffusers', plus our per-step overhead.

Data x0 ~ N(mu, std^2) per channel (ldm.diffusion.analytic.GaussianData): the exact eps/v predictor and
the exact probability-flow ODE map are closed form. Every deterministic sampler starts from the same
x_T ~ N(0, I) (times its init_noise_sigma); the reference is the exact ODE solution from the sampler's
own starting state and noise level to the level its last step lands on (x0 for most; alphas_cumprod[0]
for DDIM/PLMS with set_alpha_to_one=False). Error = RMS over all samples, so it is pure discretisation
error. SD settings (scaled_linear 0.00085 -> 0.012, 1000 steps), float32 latents on both sides; three
settings: eps model, v model, v model on the zero-terminal-SNR schedule with trailing spacing.
"-": the combination does not exist (diffusers has no such option, or the sampler refuses it).

The diffusers side runs this same file under --torch_python / $TORCH_PYTHON (skipped when absent).
Overhead: milliseconds per step for the sampler's own arithmetic on a (2, 4, 64, 64) latent (the
512-px SD latent with CFG) with a do-nothing model, numpy and MindSpore (PyNative, CPU).

    bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env   # once: the torch reference side
    python bench/bench_samplers.py --torch_python /tmp/msd-fixture-env/bin/python
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, REPO)

from ldm.diffusion.analytic import GaussianData  # noqa: E402  (numpy only; the torch side imports it too)

STEPS = (5, 10, 15, 20, 50)
MU = np.array([0.5, -1.0, 0.0, 2.0]).reshape(1, 4, 1, 1)
STD = np.array([0.8, 1.0, 0.5, 1.5]).reshape(1, 4, 1, 1)
# variant -> (our sampler name, overrides); all deterministic
VARIANTS = {
    "ddim": ("ddim", {}),
    "plms": ("plms", {}),
    "plms exact_v": ("plms", {"exact_v_conversion": True}),
    "dpm_solver (2M)": ("dpm_solver", {}),
    "dpm_solver_3m": ("dpm_solver_3m", {}),
    "dpm_solver_single": ("dpm_solver_single", {}),
    "dpm_solver_single o3": ("dpm_solver_single", {"order": 3}),
    "uni_pc (bh2)": ("uni_pc", {}),
    "uni_pc bh1 o3": ("uni_pc", {"solver_type": "bh1", "order": 3, "final_sigmas_type": "sigma_min"}),
    "euler": ("euler", {}),
    "heun": ("heun", {}),
    "lms": ("lms", {}),
    "dpm_solver karras": ("dpm_solver", {"use_karras_sigmas": True}),
    "euler karras": ("euler", {"use_karras_sigmas": True}),
}
# our name -> diffusers class and fixed kwargs (SD settings are added where the class accepts them)
DIFFUSERS = {
    "ddim": ("DDIMScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "dpm_solver": ("DPMSolverMultistepScheduler", {}),
    "dpm_solver_3m": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    "dpm_solver_single": ("DPMSolverSinglestepScheduler", {}),
    "uni_pc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
}
DIFFUSERS_OPTIONS = {"order", "solver_type", "final_sigmas_type", "use_karras_sigmas", "rescale_zero_snr",
                     "timestep_spacing"}
# setting -> (prediction type, overrides applied to every variant)
SETTINGS = {"eps": ("eps", {}), "v": ("v", {}),
            "v-zero-snr-trailing": ("v", {"rescale_zero_snr": True, "timestep_spacing": "trailing"})}
SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
          steps_offset=1, clip_sample=False, set_alpha_to_one=False)


def initial_noise(n_samples):
    return np.random.default_rng(0).standard_normal((n_samples, 4, 1, 1)).astype(np.float32)


def rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


# ------------------------------------------------------------------ our side
def ours_accuracy(setting, n_samples):
    from ldm.diffusion.analytic import sampler_start
    from ldm.diffusion.samplers import get_sampler
    prediction_type, common = SETTINGS[setting]
    x_T = initial_noise(n_samples)
    results = {}
    for variant, (name, overrides) in VARIANTS.items():
        results[variant] = {}
        for steps in STEPS:
            sampler = get_sampler(name, prediction_type=prediction_type, **common, **overrides)
            data = GaussianData(MU, STD, sampler._train_sigmas())
            try:
                sampler.set_timesteps(steps)
            except ValueError:                          # e.g. plms cannot start at zero SNR
                results[variant][str(steps)] = None
                continue
            abar_start, x_start = sampler_start(sampler, x_T)
            x = sampler.sample(data.model(prediction_type, dtype=np.float32), x_T)
            exact = data.ode_map(x_start, abar_start, sampler.final_alpha_cumprod)
            results[variant][str(steps)] = rms(x, exact)
    return results


def ours_overhead(steps=20):
    """ms per step of sampler arithmetic alone (model returns a constant array/Tensor)."""
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    from ldm.diffusion.samplers import SAMPLER_NAMES, get_sampler
    x_np = np.random.default_rng(0).standard_normal((2, 4, 64, 64)).astype(np.float32)
    out = {}
    for name in SAMPLER_NAMES:
        out[name] = {}
        for lib, x_T in (("numpy", x_np), ("mindspore", ms.Tensor(x_np))):
            const = 0.1 * x_T
            sampler = get_sampler(name)
            best = float("inf")
            for _ in range(3):                              # best of 3: the machine is shared
                t0 = time.perf_counter()
                x = sampler.sample(lambda x, t: const, x_T, steps, noise_fn=lambda like: const)
                if lib == "mindspore":
                    x.asnumpy()
                best = min(best, 1e3 * (time.perf_counter() - t0) / len(sampler.timesteps))
            out[name][lib] = best
    return out


# ------------------------------------------------------------------ diffusers side (torch interpreter)
def diffusers_accuracy(setting, n_samples):
    import inspect
    import torch
    import diffusers
    prediction_type, common = SETTINGS[setting]
    names = {"order": "solver_order", "rescale_zero_snr": "rescale_betas_zero_snr"}
    x_T = initial_noise(n_samples)
    results = {}
    for variant, (name, overrides) in VARIANTS.items():
        overrides = dict(common, **overrides)
        cls_name, fixed = DIFFUSERS[name]
        cls = getattr(diffusers, cls_name)
        accepted = set(inspect.signature(cls.__init__).parameters)
        if any(key not in DIFFUSERS_OPTIONS or names.get(key, key) not in accepted for key in overrides):
            continue                                    # an option diffusers does not offer for this class
        kwargs = {k: v for k, v in SD.items() if k in accepted}
        kwargs.update(fixed)
        for key, value in overrides.items():
            kwargs[names.get(key, key)] = value
        kwargs["prediction_type"] = {"eps": "epsilon", "v": "v_prediction"}[prediction_type]
        results[variant] = {}
        for steps in STEPS:
            try:
                results[variant][str(steps)] = _diffusers_run(cls, kwargs, name, steps, x_T, prediction_type)
            except Exception as exc:                    # a diffusers failure is a result too
                print(f"diffusers {variant} {steps} steps: {type(exc).__name__}: {exc}", file=sys.stderr)
                results[variant][str(steps)] = None
    return results


def _diffusers_run(cls, kwargs, name, steps, x_T, prediction_type):
    """RMS error of one diffusers scheduler run (pipeline loop) against the exact ODE solution."""
    import torch
    sched = cls(**kwargs)
    abar = sched.alphas_cumprod.double().numpy()
    with np.errstate(divide="ignore"):
        train_sigmas = np.sqrt((1 - abar) / abar)
    data = GaussianData(MU, STD, train_sigmas)
    model = data.model(prediction_type, dtype=np.float32)
    sched.set_timesteps(steps)
    x = torch.from_numpy(x_T) * sched.init_noise_sigma
    t0 = sched.timesteps[0]
    x_start = sched.scale_model_input(x, t0).double().numpy()
    if name in ("ddim", "plms"):
        abar_start, final = float(abar[int(t0)]), float(abar[0])
    else:
        abar_start, final = 1.0 / (1.0 + float(sched.sigmas[0]) ** 2), 1.0
        if kwargs.get("final_sigmas_type") == "sigma_min":
            final = 1.0 / (1.0 + float(sched.sigmas[-1]) ** 2)
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        out = torch.from_numpy(model(x_in.numpy(), float(t)))
        x = sched.step(out, t, x).prev_sample
    return rms(x.numpy(), data.ode_map(x_start, abar_start, final))


# ------------------------------------------------------------------ driver
def run_torch_side(torch_python, setting, n_samples):
    cmd = [torch_python, os.path.abspath(__file__), "--_torch_side", "--settings", setting,
           "--samples", str(n_samples)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    for line in proc.stderr.splitlines():
        if line.startswith("diffusers "):
            print(line)                                 # failures of single diffusers runs
    if proc.returncode != 0:
        print(f"diffusers side failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(ours, theirs, setting):
    head = f"{'sampler':24s}" + "".join(f"{s:>22d}" for s in STEPS)
    lines = [f"[{setting}]", head, " " * 24 + "".join(f"{'ours / diffusers':>22s}" for _ in STEPS)]
    for variant in VARIANTS:
        cells = []
        for s in STEPS:
            a = ours[variant][str(s)]
            b = theirs[variant][str(s)] if theirs and variant in theirs else None
            cells.append(("-" if a is None else f"{a:.2e}") + " / " + ("-" if b is None else f"{b:.2e}"))
        lines.append(f"{variant:24s}" + "".join(f"{c:>22s}" for c in cells))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""),
                        help="python with torch + diffusers for the reference column (empty: ours only)")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS),
                        help="prediction type / schedule settings to run")
    parser.add_argument("--samples", type=int, default=4096, help="samples per channel")
    parser.add_argument("--output", default=os.path.join(BENCH_DIR, "out", "bench_samplers.json"))
    parser.add_argument("--no_overhead", action="store_true", help="skip the per-step overhead timing")
    parser.add_argument("--_torch_side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._torch_side:
        print(json.dumps(diffusers_accuracy(args.settings[0], args.samples)))
        return 0

    report = dict(machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                  data=dict(mu=MU.ravel().tolist(), std=STD.ravel().tolist(), samples_per_channel=args.samples),
                  metric="RMS error of the final latent vs the exact probability-flow ODE solution",
                  accuracy={})
    print("Sampler error vs exact PF-ODE solution on Gaussian data (RMS; SD schedule; float32)")
    for setting in args.settings:
        ours = ours_accuracy(setting, args.samples)
        theirs = run_torch_side(args.torch_python, setting, args.samples) if args.torch_python else None
        report["accuracy"][setting] = dict(ours=ours, diffusers=theirs)
        print()
        print(format_table(ours, theirs, setting))
    if not args.no_overhead:
        overhead = ours_overhead()
        report["overhead_ms_per_step"] = overhead
        print("\nSampler arithmetic per model call, (2,4,64,64) float32 latent, do-nothing model (ms)")
        print(f"{'sampler':20s}{'numpy':>10s}{'mindspore':>12s}")
        for name, row in overhead.items():
            print(f"{name:20s}{row['numpy']:10.2f}{row['mindspore']:12.2f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
