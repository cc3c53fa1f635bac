"""Sampler registry: the ``--sampler`` names of text_to_image.py -> configured sampler objects.

Defaults reproduce the diffusers scheduler of the same family built with Stable Diffusion's settings
(scaled_linear 0.00085 -> 0.012, 1000 steps, steps_offset=1, clip_sample=False, set_alpha_to_one=False)
and the scheduler's own defaults. Everything can be overridden by keyword, e.g.
``get_sampler("uni_pc", prediction_type="v", timestep_spacing="trailing", rescale_zero_snr=True)``.
"""
from ldm.diffusion.compvis import CompVisDDIMSampler, CompVisPLMSSampler
from ldm.diffusion.ddim import DDIMSampler
from ldm.diffusion.ddpm import DDPMSampler
from ldm.diffusion.dpm_solver import DPMSolverMultistepSampler, DPMSolverSinglestepSampler
from ldm.diffusion.dpm_solver_vp import VPDPMSolverSampler
from ldm.diffusion.k_samplers import EulerAncestralSampler, EulerSampler, HeunSampler, LMSSampler
from ldm.diffusion.pndm import PLMSSampler
from ldm.diffusion.unipc import UniPCSampler
from ldm.diffusion.unipc_vp import VPUniPCSampler

# name -> (class, preset options)
SAMPLERS = {
    "ddpm": (DDPMSampler, {}),
    "ddim": (DDIMSampler, {}),
    "plms": (PLMSSampler, {}),
    "dpm_solver": (DPMSolverMultistepSampler, {}),
    "dpm_solver_3m": (DPMSolverMultistepSampler, {"solver_order": 3}),
    "dpm_solver_sde": (DPMSolverMultistepSampler, {"algorithm_type": "sde-dpmsolver++"}),
    "dpm_solver_single": (DPMSolverSinglestepSampler, {}),
    "uni_pc": (UniPCSampler, {}),
    "euler": (EulerSampler, {}),
    "euler_a": (EulerAncestralSampler, {}),
    "heun": (HeunSampler, {}),
    "lms": (LMSSampler, {}),
    # the original continuous-time DPM-Solver / UniPC code MindONE runs (--dpm_solver, default, --uni_pc)
    "mindone_dpm_solver": (VPDPMSolverSampler, {"algorithm_type": "dpmsolver"}),
    "mindone_dpm_solver_pp": (VPDPMSolverSampler, {"algorithm_type": "dpmsolver++"}),
    "mindone_uni_pc": (VPUniPCSampler, {}),
    "mindone_ddim": (CompVisDDIMSampler, {}),
    "mindone_plms": (CompVisPLMSSampler, {}),
}
SAMPLER_NAMES = tuple(SAMPLERS)


def get_sampler(name, **overrides):
    """Build a sampler by name. Common overrides: prediction_type ("eps"|"v"), timestep_spacing
    ("leading"|"trailing"|"linspace"), steps_offset, use_karras_sigmas, rescale_zero_snr, order,
    schedule (a NoiseSchedule) or beta_schedule/linear_start/linear_end/num_train_timesteps."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    cls, preset = SAMPLERS[name]
    options = dict(preset)
    options.update(overrides)
    if "order" in options and "solver_order" in cls.defaults:
        options["solver_order"] = options.pop("order")
    if options.get("use_karras_sigmas") is False and "use_karras_sigmas" not in cls.defaults:
        options.pop("use_karras_sigmas")
    sampler = cls(**options)
    sampler.name = name
    sampler.config["name"] = name
    return sampler
