"""Noise schedules, prediction-type algebra and samplers.

- schedule.NoiseSchedule: float64 betas / alphas_cumprod (linear, scaled_linear, squaredcos_cap_v2,
  zero-terminal-SNR rescale), add_noise; timestep grids (leading / trailing / linspace), Karras sigmas.
- prediction: eps / v / x0 / score conversions, get_target, min_snr_weight (training and samplers).
- samplers.get_sampler(name, **overrides): ddpm, ddim, plms, dpm_solver, dpm_solver_3m, dpm_solver_sde,
  dpm_solver_single, uni_pc, euler, euler_a, heun, lms (one file per family; base.Sampler is the API).
- guidance: classifier-free guidance with guidance_rescale; interpolation.slerp; analytic.GaussianData
  (exact model for tests and bench/bench_samplers.py).
"""
