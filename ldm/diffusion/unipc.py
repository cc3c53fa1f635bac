"""UniPC (Zhao et al. 2023): unified predictor-corrector, B(h) = h (bh1) or e^h - 1 (bh2), orders 1-3.

Step-for-step as diffusers' UniPCMultistepScheduler. At step i the corrector first refines the latent
that produced this model call (using the new output, no extra model call), then the predictor moves to
the next level. Both are linear in latents and past x0 (or eps) predictions; the coefficients
(rho from a small linear solve) are precomputed in float64.
"""
import numpy as np

from ldm.diffusion import prediction
from ldm.diffusion.base import Sampler, StepOutput, combine, log_snr, vp_from_sigma
from ldm.diffusion.schedule import karras_sigmas


def _phi_system(hh, rks, order, solver_type):
    """R [order x order], b [order], B_h, h_phi_1 of the UniPC linear system."""
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    B_h = hh if solver_type == "bh1" else np.expm1(hh)
    factorial, R, b = 1, [], []
    for j in range(1, order + 1):
        R.append(np.power(rks, j - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return np.array(R), np.array(b), B_h, h_phi_1


class UniPCSampler(Sampler):
    name = "uni_pc"
    solver_grid = True
    defaults = dict(solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
                    disable_corrector=(), use_karras_sigmas=False, final_sigmas_type="zero",
                    thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)

    def _plan(self, n):
        if self.solver_type not in ("bh1", "bh2"):
            raise ValueError("uni_pc: solver_type must be bh1 or bh2")
        if self.solver_order not in (1, 2, 3):
            raise ValueError("uni_pc: solver_order must be 1, 2 or 3")
        train = self._train_sigmas()
        if self.use_karras_sigmas:
            sig = karras_sigmas(train[0], train[-1], n)
            ts = self._sigmas_to_t(sig, train).round()
            last = sig[-1]
        else:
            ts = self.grid(n)
            sig = self._interp_sigmas(ts)
            last = train[0]
        sig = np.concatenate([sig, [0.0 if self.final_sigmas_type == "zero" else last]])
        self.timesteps, self.sigmas = ts, sig
        alpha, sigma = vp_from_sigma(sig)
        lam = log_snr(alpha, sigma)
        x0 = self.predict_x0
        target = "x0" if x0 else "eps"
        self._convert_coefs = [prediction.coefficients(self.prediction_type, target, a, s)
                               for a, s in zip(alpha[:-1], sigma[:-1])]
        orders = []
        for i in range(n):
            order = min(self.solver_order, n - i) if self.lower_order_final else self.solver_order
            orders.append(min(order, i + 1))
        self._orders, self._grid_levels = orders, (alpha, sigma, lam)
        self._predictors, self._correctors = [], []
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i in range(n):
                self._predictors.append(self._predictor(i, orders[i], alpha, sigma, lam, x0))
                use_corr = i > 0 and (i - 1) not in tuple(self.disable_corrector)
                self._correctors.append(self._corrector(i, orders[i - 1], alpha, sigma, lam, x0) if use_corr else None)
        self.final_alpha_cumprod = float(alpha[-1] ** 2)

    def _predictor(self, i, order, alpha, sigma, lam, x0):
        """Coefficients (A on x, weights on [m_i, m_{i-1}, m_{i-2}]) for x_{i+1}."""
        t, s0 = i + 1, i
        h = lam[t] - lam[s0]
        hh = -h if x0 else h
        A = sigma[t] / sigma[s0] if x0 else alpha[t] / alpha[s0]
        K = alpha[t] if x0 else sigma[t]
        W = np.zeros(3)
        if sigma[t] == 0.0 and order == 1:    # exact limit of the first-order step to sigma = 0: x0_hat
            A = 0.0 if x0 else alpha[t] / alpha[s0]
            W[0] = alpha[t] if x0 else -alpha[t] * sigma[s0] / alpha[s0]
            return _check(i, A, W)
        rks = [(lam[s0 - k] - lam[s0]) / h for k in range(1, order)]
        R, b, B_h, h_phi_1 = _phi_system(hh, np.array(rks + [1.0]), order, self.solver_type)
        W[0] = -K * h_phi_1
        if order >= 2:
            rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            for k, (rho, rk) in enumerate(zip(rhos, rks), start=1):   # D1_k = (m_{i-k} - m_i) / r_k
                W[k] += -K * B_h * rho / rk
                W[0] -= -K * B_h * rho / rk
        return _check(i, A, W)

    def _corrector(self, i, order, alpha, sigma, lam, x0):
        """Coefficients (A on the previous latent, weights on [m_i(new), m_{i-1}, m_{i-2}, m_{i-3}])."""
        t, s0 = i, i - 1
        h = lam[t] - lam[s0]
        hh = -h if x0 else h
        A = sigma[t] / sigma[s0] if x0 else alpha[t] / alpha[s0]
        K = alpha[t] if x0 else sigma[t]
        rks = [(lam[s0 - k] - lam[s0]) / h for k in range(1, order)]
        R, b, B_h, h_phi_1 = _phi_system(hh, np.array(rks + [1.0]), order, self.solver_type)
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
        W = np.zeros(4)
        W[1] = -K * h_phi_1                                    # m0 = output at s0 = i - 1
        for k, rk in enumerate(rks, start=1):                  # D1_k = (m_{s0-k} - m_{s0}) / r_k
            W[1 + k] += -K * B_h * rhos[k - 1] / rk
            W[1] -= -K * B_h * rhos[k - 1] / rk
        W[0] += -K * B_h * rhos[-1]                            # D1_t = m_new - m0
        W[1] -= -K * B_h * rhos[-1]
        return _check(i, A, W)

    def _step(self, model_output, i, sample, noise_fn=None):
        cx, co = self._convert_coefs[i]
        m = combine([(cx, sample), (co, model_output)])
        if self.predict_x0:
            m = self._postprocess_x0(m)
        st = self._state
        hist = st.setdefault("outputs", [])
        corr = self._correctors[i]
        if corr is not None and "last_sample" in st:
            A, W = corr
            if st["last_order"] != self._orders[i - 1]:       # the previous step ran at a lower order
                A, W = self._corrector(i, st["last_order"], *self._grid_levels, self.predict_x0)
            terms = [(A, st["last_sample"]), (W[0], m)] + \
                [(W[1 + k], hist[-1 - k]) for k in range(min(len(hist), 3)) if W[1 + k] != 0.0]
            sample = combine(terms)
        hist[:] = hist[-2:] + [m]
        st["last_sample"] = sample
        A, W = self._predictors[i]
        # a run that starts mid-schedule (img2img, inpainting strength) warms up with lower orders, as
        # diffusers' lower_order_nums does
        st["last_order"] = min(self._orders[i], len(hist))
        if st["last_order"] != self._orders[i]:
            A, W = self._predictor(i, st["last_order"], *self._grid_levels, self.predict_x0)
        terms = [(A, sample)] + [(W[k], hist[-1 - k]) for k in range(len(hist)) if W[k] != 0.0]
        return StepOutput(combine(terms), m if self.predict_x0 else None)


def _check(i, A, W):
    if not (np.isfinite(A) and np.isfinite(W).all()):
        raise ValueError(f"uni_pc: non-finite coefficients at step {i}; use final_sigmas_type='sigma_min' "
                         "or lower_order_final=True")
    return float(A), W
