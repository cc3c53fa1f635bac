"""Multistep UniPC as the original code runs it (wl-zhao/UniPC, the code MindONE's ``UniPCSampler`` ports):
continuous time on :mod:`ldm.diffusion.vp_time`, ``skip_type='time_uniform'``, ``method='multistep'``.

MindONE's wrapper: order 3, variant "bh1" (B(h) = h), data prediction (predict_x0=True),
lower_order_final=True (the last steps drop to min(order, steps left) whatever the step count), and no
corrector after the last step. Call i's output m_i first corrects the latent it was evaluated at
(x_i = A x_{i-1} + W . [m_i, m_{i-1}, ...], no extra model call), then the predictor moves the corrected
latent to t_{i+1}. Coefficients (rho from the small R rho = b systems, solved in full) are planned in
float64 per step.
"""
import numpy as np

from ldm.diffusion.base import StepOutput, combine
from ldm.diffusion.unipc import _phi_system
from ldm.diffusion.vp_time import VPTimeSampler


class VPUniPCSampler(VPTimeSampler):
    """``solver_order`` 1-3, ``variant`` "bh1" | "bh2", ``predict_x0`` (data or noise prediction)."""

    name = "mindone_uni_pc"
    defaults = dict(solver_order=3, variant="bh1", predict_x0=True, lower_order_final=True)

    def orders(self, n):
        """Order of the step from t_i to t_{i+1}: warm-up 1, 2, ... then solver_order (lower at the end)."""
        order = self.solver_order
        return [i + 1 if i + 1 < order else (min(order, n - i) if self.lower_order_final else order)
                for i in range(n)]

    def _plan(self, n):
        if self.variant not in ("bh1", "bh2"):
            raise ValueError(f"{self.name}: variant must be bh1 or bh2")
        if self.solver_order not in (1, 2, 3):
            raise ValueError(f"{self.name}: solver_order must be 1, 2 or 3")
        x0 = bool(self.predict_x0)
        alpha, sigma, lam = self._time_grid(n, "x0" if x0 else "eps")
        levels = (alpha, sigma, lam, x0, self.variant)
        orders = self.orders(n)
        # every order up to the planned one (a run started mid-grid has less history; see _step)
        self._predictors = [[_coefficients(i, i + 1, p, *levels, corrector=False) for p in range(1, o + 1)]
                            for i, o in enumerate(orders)]
        # the corrector at call i refines the step t_{i-1} -> t_i with that step's order
        self._correctors = [None] + [[_coefficients(i - 1, i, p, *levels, corrector=True)
                                      for p in range(1, orders[i - 1] + 1)] for i in range(1, n)]

    def _step(self, model_output, i, sample, noise_fn=None):
        m, x0 = self._convert(model_output, sample, i)
        st = self._state
        hist = st.setdefault("outputs", [])
        if self._correctors[i] is not None and "base" in st:
            plans = self._correctors[i]
            A, W = plans[min(len(plans), len(hist)) - 1]          # W over (m_i, m_{i-1}, m_{i-2}, ...)
            sample = combine([(A, st["base"]), (W[0], m)] + [(W[1 + k], hist[-1 - k]) for k in range(len(W) - 1)])
        hist[:] = hist[-2:] + [m]
        st["base"] = sample
        plans = self._predictors[i]
        A, W = plans[min(len(plans), len(hist)) - 1]              # W over (m_i, m_{i-1}, ...)
        return StepOutput(combine([(A, sample)] + [(W[k], hist[-1 - k]) for k in range(len(W))]), x0)


def _coefficients(s0, t, order, alpha, sigma, lam, x0, variant, corrector):
    """UniPC-p update from grid time s0 to t (B(h) form): (A on x_{s0}, weights).

    Predictor weights over (m_{s0}, m_{s0-1}, ..., m_{s0-p+1}); corrector weights over
    (m_t, m_{s0}, ..., m_{s0-p+1}), m_t being the output at the predicted x_t.
    """
    h = lam[t] - lam[s0]
    hh = -h if x0 else h
    A = sigma[t] / sigma[s0] if x0 else alpha[t] / alpha[s0]
    K = alpha[t] if x0 else sigma[t]
    rks = np.array([(lam[s0 - k] - lam[s0]) / h for k in range(1, order)] + [1.0])
    R, b, B_h, h_phi_1 = _phi_system(hh, rks, order, variant)
    if corrector:
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
    else:
        rhos = np.array([]) if order == 1 else np.array([0.5]) if order == 2 else \
            np.linalg.solve(R[:-1, :-1], b[:-1])
    # x_t = A x - K h_phi_1 m0 - K B_h (sum_k rho_k (m_{s0-k} - m0) / r_k [+ rho_last (m_t - m0)])
    hist = np.zeros(order)                                     # over (m_{s0}, m_{s0-1}, ...)
    hist[0] = -K * h_phi_1
    for k in range(1, order):                                  # rhos[:order - 1] go with the D1_k
        w = -K * B_h * rhos[k - 1] / rks[k - 1]
        hist[k] += w
        hist[0] -= w
    if corrector:
        w_t = -K * B_h * rhos[-1]
        hist[0] -= w_t
        W = np.concatenate([[w_t], hist])
    else:
        W = hist
    if not (np.isfinite(A) and np.isfinite(W).all()):
        raise ValueError(f"non-finite UniPC coefficients between grid times {s0} and {t}")
    return float(A), [float(w) for w in W]
