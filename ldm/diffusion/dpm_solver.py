"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (2M, 3M, SDE), multistep and singlestep.

Step-for-step as diffusers' DPMSolverMultistepScheduler / DPMSolverSinglestepScheduler. Every update is
linear in the current (or group-start) latent, the last <= 3 converted model outputs and one noise draw:
x_next = A x + sum_k B_k m_k + C z. A, B_k, C are precomputed per step in float64 from the
log-SNR grid lambda = log(alpha / sigma); m_k is the x0 prediction (++ variants) or the eps prediction.
"""
import numpy as np

from ldm.diffusion import prediction
from ldm.diffusion.base import Sampler, StepOutput, combine, log_snr, vp_from_sigma
from ldm.diffusion.schedule import karras_sigmas

ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")


def _first_order(alg, a_t, s_t, a_s, s_s, h):
    """(A, B0, C) of the first-order (DDIM-like) update from level s to level t."""
    if alg == "dpmsolver++":
        return s_t / s_s, -a_t * np.expm1(-h), 0.0
    if alg == "dpmsolver":
        return a_t / a_s, -s_t * np.expm1(h), 0.0
    if alg == "sde-dpmsolver++":
        return s_t / s_s * np.exp(-h), a_t * -np.expm1(-2.0 * h), s_t * np.sqrt(-np.expm1(-2.0 * h))
    return a_t / a_s, -2.0 * s_t * np.expm1(h), s_t * np.sqrt(np.expm1(2.0 * h))


def _second_order_terms(alg, solver_type, a_t, s_t, h):
    """(B0, B1) multiplying D0 and the first difference D1."""
    if alg == "dpmsolver++":
        b0 = -a_t * np.expm1(-h)
        b1 = 0.5 * b0 if solver_type == "midpoint" else a_t * (np.expm1(-h) / h + 1.0)
    elif alg == "dpmsolver":
        b0 = -s_t * np.expm1(h)
        b1 = 0.5 * b0 if solver_type == "midpoint" else -s_t * (np.expm1(h) / h - 1.0)
    elif alg == "sde-dpmsolver++":
        b0 = a_t * -np.expm1(-2.0 * h)
        b1 = 0.5 * b0 if solver_type == "midpoint" else a_t * (-np.expm1(-2.0 * h) / (-2.0 * h) + 1.0)
    else:
        b0 = -2.0 * s_t * np.expm1(h)
        b1 = -s_t * np.expm1(h) if solver_type == "midpoint" else -2.0 * s_t * (np.expm1(h) / h - 1.0)
    return b0, b1


def _third_order_terms(alg, a_t, s_t, h):
    """(B0, B1, B2) multiplying D0, D1, D2 in the third-order update."""
    if alg == "dpmsolver++":
        return (-a_t * np.expm1(-h), a_t * (np.expm1(-h) / h + 1.0),
                -a_t * ((np.expm1(-h) + h) / h ** 2 - 0.5))
    if alg == "dpmsolver":
        return (-s_t * np.expm1(h), -s_t * (np.expm1(h) / h - 1.0), -s_t * ((np.expm1(h) - h) / h ** 2 - 0.5))
    if alg == "sde-dpmsolver++":
        return (a_t * -np.expm1(-2.0 * h), a_t * (-np.expm1(-2.0 * h) / (-2.0 * h) + 1.0),
                a_t * ((-np.expm1(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5))
    raise ValueError("third-order sde-dpmsolver is not defined; use sde-dpmsolver++ or order <= 2")


def multistep_coefficients(alg, solver_type, alpha, sigma, lam, i, order):
    """(A, B, C) of the order-``order`` multistep update from grid point i to i + 1 (diffusers' and the
    original DPM-Solver's formulas): x_{i+1} = A x_i + sum_k B[k] m_{i-k} + C z, B over (m_i, m_{i-1}, m_{i-2})."""
    t, s0 = i + 1, i
    h = lam[t] - lam[s0]
    A, b0, C = _first_order(alg, alpha[t], sigma[t], alpha[s0], sigma[s0], h)
    B = np.zeros(3)
    if order == 1:
        B[0] = b0
    elif order == 2:                                   # D1 = (m_i - m_{i-1}) / r0
        r0 = (lam[s0] - lam[s0 - 1]) / h
        b0, b1 = _second_order_terms(alg, solver_type, alpha[t], sigma[t], h)
        B += b0 * np.array([1.0, 0, 0]) + b1 * np.array([1.0, -1.0, 0]) / r0
    else:
        r0 = (lam[s0] - lam[s0 - 1]) / h
        r1 = (lam[s0 - 1] - lam[s0 - 2]) / h
        d10 = np.array([1.0, -1.0, 0]) / r0
        d11 = np.array([0, 1.0, -1.0]) / r1
        d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
        d2 = (d10 - d11) / (r0 + r1)
        b0, b1, b2 = _third_order_terms(alg, alpha[t], sigma[t], h)
        B += b0 * np.array([1.0, 0, 0]) + b1 * d1 + b2 * d2
    return A, B, C


class _DPMSolverBase(Sampler):
    solver_grid = True

    def _check(self):
        if self.algorithm_type not in ALGORITHMS:
            raise ValueError(f"{self.name}: algorithm_type must be one of {', '.join(ALGORITHMS)}")
        if self.solver_type not in ("midpoint", "heun"):
            raise ValueError(f"{self.name}: solver_type must be midpoint or heun")
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"{self.name}: final_sigmas_type must be zero or sigma_min")
        if not self.algorithm_type.endswith("++") and self.final_sigmas_type == "zero":
            raise ValueError(f"{self.name}: algorithm_type {self.algorithm_type} needs final_sigmas_type='sigma_min'")

    @property
    def stochastic(self):
        return self.algorithm_type.startswith("sde")

    def _sigma_grid(self, n):
        """(model timesteps [n], VE sigmas [n + 1] ending in 0 or sigma_min)."""
        train = self._train_sigmas()
        if self.use_karras_sigmas:
            sig = karras_sigmas(train[0], train[-1], n)
            ts = self._sigmas_to_t(sig, train)
            if self.schedule.config.get("beta_schedule") != "squaredcos_cap_v2":
                ts = ts.round()
        else:
            ts = self.grid(n)
            sig = self._interp_sigmas(ts)
        last = 0.0 if self.final_sigmas_type == "zero" else train[0]
        return ts, np.concatenate([sig, [last]])

    def _levels(self, sigmas):
        alpha, sigma = vp_from_sigma(sigmas)
        return alpha, sigma, log_snr(alpha, sigma)

    def _convert(self, model_output, sample, i):
        c = self._convert_coefs[i]
        m = combine([(c[0], sample), (c[1], model_output)])
        if self.algorithm_type.endswith("++"):
            return self._postprocess_x0(m)
        return m

    def _plan_conversions(self, alpha, sigma):
        target = "x0" if self.algorithm_type.endswith("++") else "eps"
        self._convert_coefs = [prediction.coefficients(self.prediction_type, target, a, s)
                               for a, s in zip(alpha[:-1], sigma[:-1])]


class DPMSolverMultistepSampler(_DPMSolverBase):
    """DPM-Solver++(2M) by default (``dpm_solver``); order 3 = 3M; sde-dpmsolver++ = 2M SDE."""

    name = "dpm_solver"
    defaults = dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
                    euler_at_final=False, use_karras_sigmas=False, final_sigmas_type="zero", thresholding=False,
                    dynamic_thresholding_ratio=0.995, sample_max_value=1.0)

    def _orders(self, n):
        orders = []
        for i in range(n):
            final = i == n - 1 and (self.euler_at_final or (self.lower_order_final and n < 15)
                                    or self.final_sigmas_type == "zero")
            second = i == n - 2 and self.lower_order_final and n < 15
            if self.solver_order == 1 or i < 1 or final:
                orders.append(1)
            elif self.solver_order == 2 or i < 2 or second:
                orders.append(2)
            else:
                orders.append(3)
        return orders

    def _plan(self, n):
        self._check()
        if self.solver_order not in (1, 2, 3):
            raise ValueError(f"{self.name}: solver_order must be 1, 2 or 3")
        ts, sig = self._sigma_grid(n)
        self.timesteps, self.sigmas = ts, sig
        alpha, sigma, lam = self._levels(sig)
        self._plan_conversions(alpha, sigma)
        self._planned_orders, self._grid_levels = self._orders(n), (alpha, sigma, lam)
        self._updates = [self._coefficients(i, order) for i, order in enumerate(self._planned_orders)]
        self.final_alpha_cumprod = float(alpha[-1] ** 2)

    def _coefficients(self, i, order):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _finite(self.name, i, *multistep_coefficients(self.algorithm_type, self.solver_type,
                                                                 *self._grid_levels, i, order))

    def _step(self, model_output, i, sample, noise_fn=None):
        m = self._convert(model_output, sample, i)
        hist = self._state.setdefault("outputs", [])
        hist[:] = hist[-2:] + [m]
        A, B, C = self._updates[i]
        if len(hist) < self._planned_orders[i]:
            # a run that starts mid-schedule (img2img, inpainting strength) warms up with lower orders, as
            # diffusers' lower_order_nums does
            A, B, C = self._coefficients(i, len(hist))
        terms = [(A, sample)] + [(B[k], hist[-1 - k]) for k in range(len(hist)) if B[k] != 0.0]
        if self.stochastic:
            terms.append((C, self._draw(noise_fn, sample)))
        x0 = m if self.algorithm_type.endswith("++") else None
        return StepOutput(combine(terms), x0)


class DPMSolverSinglestepSampler(_DPMSolverBase):
    """Singlestep DPM-Solver(++): groups of [1, 2(, 3)] model calls, each group one higher-order step
    from the latent at its start, the intermediate points placed on the timestep grid."""

    name = "dpm_solver_single"
    defaults = dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
                    use_karras_sigmas=False, final_sigmas_type="zero", thresholding=False,
                    dynamic_thresholding_ratio=0.995, sample_max_value=1.0)

    def order_list(self, n):
        order = self.solver_order
        lower_final = self.lower_order_final or n % order != 0 or self.final_sigmas_type == "zero"
        if lower_final:
            if order == 3:
                tail = {0: [1, 2] + [1], 1: [1], 2: [1, 2]}[n % 3]
                orders = [1, 2, 3] * (n // 3 - (1 if n % 3 == 0 else 0)) + tail
            elif order == 2:
                orders = [1, 2] * (n // 2 - 1) + [1, 1] if n % 2 == 0 else [1, 2] * (n // 2) + [1]
            else:
                orders = [1] * n
        else:
            orders = {1: [1], 2: [1, 2], 3: [1, 2, 3]}[order] * (n // order)
        if self.final_sigmas_type == "zero":
            orders[-1] = 1
        return orders

    def _plan(self, n):
        self._check()
        if self.solver_order not in (1, 2, 3):
            raise ValueError(f"{self.name}: solver_order must be 1, 2 or 3")
        if self.algorithm_type == "sde-dpmsolver":
            raise ValueError(f"{self.name}: sde-dpmsolver is multistep only")
        ts, sig = self._sigma_grid(n)
        self.timesteps, self.sigmas = ts, sig
        alpha, sigma, lam = self._levels(sig)
        self._plan_conversions(alpha, sigma)
        alg, st = self.algorithm_type, self.solver_type
        self._updates = []
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i, order in enumerate(self.order_list(n)):
                order = min(order, i + 1)
                t, base = i + 1, i - order + 1           # base: the grid point where the group started
                h = lam[t] - lam[base]
                A, b0, C = _first_order(alg, alpha[t], sigma[t], alpha[base], sigma[base], h)
                B = np.zeros(3)                             # over (m_i, m_{i-1}, m_{i-2})
                if order == 1:
                    B[0] = b0
                elif order == 2:
                    r0 = (lam[i] - lam[i - 1]) / h
                    b0, b1 = _second_order_terms(alg, st, alpha[t], sigma[t], h)
                    B += b0 * np.array([0, 1.0, 0]) + b1 * np.array([1.0, -1.0, 0]) / r0
                else:
                    r0 = (lam[i] - lam[i - 2]) / h
                    r1 = (lam[i - 1] - lam[i - 2]) / h
                    d0 = np.array([0, 0, 1.0])
                    d10 = np.array([0, 1.0, -1.0]) / r1
                    d11 = np.array([1.0, 0, -1.0]) / r0
                    b0, b1, b2 = _third_order_terms(alg, alpha[t], sigma[t], h)
                    if st == "midpoint":
                        B += b0 * d0 + b1 * d11
                    else:
                        d1 = (r0 * d10 - r1 * d11) / (r0 - r1)
                        d2 = 2.0 * (d11 - d10) / (r0 - r1)
                        B += b0 * d0 + b1 * d1 + b2 * d2
                self._updates.append((order,) + _finite(self.name, i, A, B, C))
        self.final_alpha_cumprod = float(alpha[-1] ** 2)

    def _step(self, model_output, i, sample, noise_fn=None):
        m = self._convert(model_output, sample, i)
        hist = self._state.setdefault("outputs", [])
        hist[:] = hist[-2:] + [m]
        order, A, B, C = self._updates[i]
        if order == 1:
            self._state["group_start"] = sample
        base = self._state["group_start"]
        terms = [(A, base)] + [(B[k], hist[-1 - k]) for k in range(len(hist)) if B[k] != 0.0]
        if self.stochastic:
            terms.append((C, self._draw(noise_fn, sample)))
        x0 = m if self.algorithm_type.endswith("++") else None
        return StepOutput(combine(terms), x0)


def _finite(name, i, A, B, C):
    A, C, B = float(A), float(C), np.asarray(B, dtype=np.float64)
    if not (np.isfinite(A) and np.isfinite(B).all() and np.isfinite(C)):
        raise ValueError(f"{name}: non-finite update coefficients at step {i} "
                         "(use final_sigmas_type='sigma_min' for this algorithm)")
    return A, B, C
