"""bench/studies/blas_custom.py's BLAS custom GEMMs: forward and graph-mode gradients equal MindSpore's BatchMatMul."""
import os
import shutil
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn, ops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench", "studies"))
import blas_custom  # noqa: E402


class _Weighted(nn.Cell):
    """sum(op(a, b) * g): a scalar whose gradients are op's vector-Jacobian products with g."""

    def __init__(self, op, g):
        super().__init__()
        self.op, self.g = op, Tensor(g)

    def construct(self, a, b):
        return (self.op(a, b) * self.g).sum()


@pytest.mark.parametrize("flavour", ["aot", "pyfunc"])
def test_custom_gemm_matches_batchmatmul(flavour, tmp_path, monkeypatch):
    if flavour == "aot" and shutil.which("g++") is None:
        pytest.skip("no g++ to build the aot kernel")
    monkeypatch.setattr(blas_custom, "build_library",
                        lambda out_dir=str(tmp_path), f=blas_custom.build_library: f(out_dir))
    ms.set_device("CPU")
    gemm = blas_custom.make_ops(flavour)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 5, 7), dtype=np.float32), rng.standard_normal((2, 3, 7, 4), dtype=np.float32)
    g = rng.standard_normal((2, 3, 5, 4), dtype=np.float32)
    t = lambda x: np.ascontiguousarray(np.swapaxes(x, -1, -2))      # noqa: E731
    cases = {"NN": ((a, b), ops.BatchMatMul()), "NT": ((a, t(b)), ops.BatchMatMul(transpose_b=True)),
             "TN": ((t(a), b), ops.BatchMatMul(transpose_a=True))}
    for pattern, ((x, y), own) in cases.items():
        out = gemm[pattern](Tensor(x), Tensor(y)).asnumpy()
        np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-5, atol=1e-5)
        grads = ms.jit(ms.grad(_Weighted(gemm[pattern], g), grad_position=(0, 1)))(Tensor(x), Tensor(y))
        ref = ms.jit(ms.grad(_Weighted(own, g), grad_position=(0, 1)))(Tensor(x), Tensor(y))
        for mine, theirs in zip(grads, ref):
            mine, theirs = mine.asnumpy(), theirs.asnumpy()
            assert np.abs(mine - theirs).max() <= 1e-5 * np.abs(theirs).max(), pattern
    x2, w2 = rng.standard_normal((6, 5), dtype=np.float32), rng.standard_normal((4, 5), dtype=np.float32)
    np.testing.assert_allclose(gemm["NT"](Tensor(x2), Tensor(w2)).asnumpy(), x2 @ w2.T, rtol=1e-5, atol=1e-5)
