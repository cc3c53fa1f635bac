"""Frechet Inception Distance and Kernel Inception Distance from feature matrices (float64 math).

FID follows pytorch-fid's ``calculate_frechet_distance`` (``method="sqrtm"``; the default ``"eig"``
computes the same trace from symmetric eigenvalues, 10x faster): |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrtm(S1 S2),
covariances with N - 1, ``scipy.linalg.sqrtm``; a non-finite sqrtm is retried with eps * I added
to both covariances. With few images (N < feature dim) S1 S2 is singular and sqrtm comes back
complex; pytorch-fid refuses when the imaginary diagonal exceeds 1e-3, we warn and keep the real
part (the value is then dominated by small-N bias anyway: always report N, prefer KID there).

KID follows torch-fidelity: cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, unbiased MMD^2
averaged over ``subsets`` random subsets of ``subset_size`` drawn with ``RandomState(seed)``.
"""
import warnings

import numpy as np
from scipy import linalg


def feature_statistics(features):
    """(N, D) features -> dict(mu (D,), sigma (D, D), n) in float64, sigma with N - 1 as np.cov."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature rows for a covariance, got shape {features.shape}")
    return {"mu": features.mean(axis=0), "sigma": np.cov(features, rowvar=False), "n": len(features)}


def _sqrtm(mat):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular input; we check the result instead
        out = linalg.sqrtm(mat)
    return out[0] if isinstance(out, tuple) else out


def trace_sqrt_product(sigma1, sigma2):
    """Tr sqrtm(S1 S2) for symmetric PSD S1, S2 from two symmetric eigendecompositions: the
    eigenvalues of S1 S2 are those of S1^1/2 S2 S1^1/2 (real, >= 0; rounding negatives -> 0).
    About 10x faster than scipy's sqrtm at 2048 dims (14 s vs 135 s on 2 busy cores) and real by
    construction; on the parity fixture it agrees with pytorch-fid's sqrtm FID to 3e-7 relative."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = root1 @ sigma2 @ root1
    lam = np.linalg.eigvalsh((mid + mid.T) / 2)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, method="eig"):
    """Frechet distance between two Gaussians; returns dict(fid, imag_max, eps_retry, method).

    ``method="sqrtm"``: pytorch-fid's algorithm exactly (scipy sqrtm, eps retry, real part);
    ``method="eig"`` (default): the same trace from symmetric eigenvalues, see trace_sqrt_product.
    """
    if method == "eig":
        mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
        sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
        if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
            raise ValueError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}")
        diff = mu1 - mu2
        fid = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
        return {"fid": fid, "imag_max": 0.0, "eps_retry": False, "method": "eig"}
    if method != "sqrtm":
        raise ValueError(f"unknown FID method {method!r} (eig or sqrtm)")
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    eps_retry = False
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: sqrtm of the covariance product is singular; adding {eps} to the diagonal")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
        eps_retry = True
    imag_max = 0.0
    if np.iscomplexobj(covmean):
        imag_max = float(np.max(np.abs(covmean.imag)))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            warnings.warn(f"FID: sqrtm has an imaginary component up to {imag_max:.3g} (few images or "
                          "near-singular covariances); keeping the real part")
        covmean = covmean.real
    fid = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return {"fid": fid, "imag_max": imag_max, "eps_retry": eps_retry, "method": "sqrtm"}


def polynomial_kernel(x, y, degree=3, gamma=None, coef0=1.0):
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx, k_xy, k_yy):
    """Unbiased MMD^2 from the three kernel matrices (diagonals of k_xx, k_yy left out)."""
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return (sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def polynomial_mmd(x, y, degree=3, gamma=None, coef0=1.0):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return mmd2_unbiased(polynomial_kernel(x, x, degree, gamma, coef0),
                         polynomial_kernel(x, y, degree, gamma, coef0),
                         polynomial_kernel(y, y, degree, gamma, coef0))


def kernel_inception_distance(features1, features2, subsets=100, subset_size=1000, seed=2020,
                              degree=3, gamma=None, coef0=1.0):
    """KID as torch-fidelity computes it; subset_size is clamped to the smaller set (reported back).

    Returns dict(kid_mean, kid_std, kid_subsets, kid_subset_size).
    """
    features1 = np.asarray(features1, np.float64)
    features2 = np.asarray(features2, np.float64)
    size = min(subset_size, len(features1), len(features2))
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        f1 = features1[rng.choice(len(features1), size, replace=False)]
        f2 = features2[rng.choice(len(features2), size, replace=False)]
        mmds[i] = polynomial_mmd(f1, f2, degree, gamma, coef0)
    return {"kid_mean": float(mmds.mean()), "kid_std": float(mmds.std()), "kid_subsets": subsets,
            "kid_subset_size": size}
