"""Multistep DPM-Solver / DPM-Solver++ as the original code runs it (LuChengTHU/dpm-solver, the code
MindONE's ``DPMSolverSampler`` ports): continuous time, ``skip_type='time_uniform'``, ``method='multistep'``.

Differences from the diffusers-style ``dpm_solver`` sampler: the grid is uniform in continuous time on
[1/N, 1] and the UNet sees fractional timesteps (t - 1/N) * 1000 (:mod:`ldm.diffusion.vp_time`); log alpha
is interpolated linearly in t; sampling ends at t = 1/N (not at sigma = 0); the last step drops to first
order only when there are fewer than 10 steps. Update i (after model call i) moves the latent from t_i to
t_{i+1}: x_{i+1} = A x_i + sum_k B_k m_{i-k}, m the eps (dpmsolver) or x0 (dpmsolver++) prediction;
A, B are planned in float64 per step.
"""
import numpy as np

from ldm.diffusion.base import StepOutput, combine
from ldm.diffusion.dpm_solver import multistep_coefficients
from ldm.diffusion.vp_time import VPTimeSampler

# the original's solver_type names -> the names of the shared update formulas in dpm_solver.py
SOLVER_TYPES = {"dpmsolver": "midpoint", "taylor": "heun"}
# multistep lower_order_final applies only below this many steps (the original: "steps < 10")
LOWER_ORDER_FINAL_BELOW = 10


class VPDPMSolverSampler(VPTimeSampler):
    """``algorithm_type`` "dpmsolver" (noise prediction, MindONE's --dpm_solver) or "dpmsolver++" (data
    prediction, MindONE's default); ``solver_order`` 1-3; ``solver_type`` "dpmsolver" or "taylor"."""

    name = "mindone_dpm_solver"
    defaults = dict(algorithm_type="dpmsolver", solver_order=2, solver_type="dpmsolver", lower_order_final=True)

    def orders(self, n):
        """Order of update i: warm-up 1, 2, ... then solver_order; the last steps lower when asked and n < 10."""
        order, out = self.solver_order, []
        for i in range(n):
            if i + 1 < order:
                out.append(i + 1)
            elif self.lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
                out.append(min(order, n - i))
            else:
                out.append(order)
        return out

    def _plan(self, n):
        if self.algorithm_type not in ("dpmsolver", "dpmsolver++"):
            raise ValueError(f"{self.name}: algorithm_type must be dpmsolver or dpmsolver++")
        if self.solver_type not in SOLVER_TYPES:
            raise ValueError(f"{self.name}: solver_type must be dpmsolver or taylor")
        if self.solver_order not in (1, 2, 3):
            raise ValueError(f"{self.name}: solver_order must be 1, 2 or 3")
        alg = self.algorithm_type
        alpha, sigma, lam = self._time_grid(n, "x0" if alg == "dpmsolver++" else "eps")
        # per step, the update of every order up to the planned one: a run that starts mid-grid
        # (img2img) has less history and uses the lower orders, as the original's warm-up does
        self._updates = [[_update(alg, SOLVER_TYPES[self.solver_type], alpha, sigma, lam, i, p)
                          for p in range(1, order + 1)] for i, order in enumerate(self.orders(n))]

    def _step(self, model_output, i, sample, noise_fn=None):
        m, x0 = self._convert(model_output, sample, i)
        hist = self._state.setdefault("outputs", [])
        hist[:] = hist[-2:] + [m]
        plans = self._updates[i]
        A, B = plans[min(len(plans), len(hist)) - 1]
        terms = [(A, sample)] + [(B[k], hist[-1 - k]) for k in range(len(B))]
        return StepOutput(combine(terms), x0)


def _update(alg, solver_type, alpha, sigma, lam, i, order):
    """(A, B) of the order-``order`` multistep update from grid time i to i + 1; B over (m_i, m_{i-1}, ...)."""
    A, B, _ = multistep_coefficients(alg, solver_type, alpha, sigma, lam, i, order)
    B = B[:order]
    if not (np.isfinite(A) and np.isfinite(B).all()):
        raise ValueError(f"non-finite DPM-Solver coefficients at step {i}")
    return float(A), [float(b) for b in B]
