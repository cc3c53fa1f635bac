"""Prototype: MindSpore custom ops that run (batched) float32 GEMMs on numpy's OpenBLAS, with gradients.

Two flavours of ``ops.Custom``, both usable in PyNative and under ``ms.jit``:
  aot     bench/studies/blas_gemm.cc compiled with g++ (once, cached under bench/out/), calling cblas_sgemm64_ of the
          libopenblas64_ that numpy ships (found next to numpy, passed as $MSD_BLAS_LIB);
  pyfunc  a Python function running numpy.matmul (needs the GIL on every call).
Each flavour has the three transpose patterns (NN, NT, TN) so the bprop of each is written with the
others: C = A B -> dA = dC B^T (NT), dB = A^T dC (TN); C = A B^T -> dA = dC B (NN), dB = dC^T A (TN on
(dC, A)); C = A^T B -> dA = B dC^T (NT on (B, dC)), dB = A dC (NN).
Used by bench/studies/bench_custom_gemm.py; not part of the library.
"""
import glob
import hashlib
import os
import subprocess

import numpy as np

STUDY_DIR = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.dirname(STUDY_DIR)
SOURCE = os.path.join(STUDY_DIR, "blas_gemm.cc")


def numpy_openblas():
    """Path of the OpenBLAS shared library bundled with numpy (its cblas symbols end in 64_)."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "libopenblas64_*.so*"))
    if not libs:
        raise RuntimeError("numpy ships no libopenblas64_ here (numpy.libs/); the aot GEMM needs it")
    return os.path.realpath(libs[0])


def build_library(out_dir=os.path.join(BENCH_DIR, "out")):
    """Compile blas_gemm.cc (cached by source hash) and return the .so path."""
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    os.makedirs(out_dir, exist_ok=True)
    lib = os.path.join(out_dir, f"blas_gemm_{digest}.so")
    if not os.path.isfile(lib):
        subprocess.run(["g++", "-O2", "-shared", "-fPIC", SOURCE, "-o", lib + ".tmp", "-ldl"], check=True)
        os.replace(lib + ".tmp", lib)
    os.environ.setdefault("MSD_BLAS_LIB", numpy_openblas())
    return lib


def _shape(pattern):
    def infer(a, b):
        m = a[-1] if pattern == "TN" else a[-2]
        n = b[-2] if pattern == "NT" else b[-1]
        return list(a[:-2]) + [m, n]
    return infer


def _np_fn(pattern):
    def t(x):
        return np.swapaxes(x, -1, -2)
    if pattern == "NN":
        return lambda a, b: np.matmul(a, b)
    if pattern == "NT":
        return lambda a, b: np.matmul(a, t(b))
    return lambda a, b: np.matmul(t(a), b)


def make_ops(flavour):
    """{"NN": op, "NT": op, "TN": op}: Custom ops with bprops, ``flavour`` "aot" or "pyfunc"."""
    from mindspore import ops
    lib = build_library() if flavour == "aot" else None
    fwd = {}
    for p in ("NN", "NT", "TN"):
        func = f"{lib}:Gemm{p}" if flavour == "aot" else _np_fn(p)
        fwd[p] = (func, _shape(p))

    def op(p, bprop=None):
        func, infer = fwd[p]
        return ops.Custom(func, out_shape=infer, out_dtype=lambda a, b: a, func_type=flavour, bprop=bprop)

    nn_, nt, tn = op("NN"), op("NT"), op("TN")      # the ops the bprops call (no second-order grads)

    def bprop_nn(a, b, out, dout):
        return nt(dout, b), tn(a, dout)

    def bprop_nt(a, b, out, dout):
        return nn_(dout, b), tn(dout, a)

    def bprop_tn(a, b, out, dout):
        return nt(b, dout), nn_(a, dout)

    return {"NN": op("NN", bprop_nn), "NT": op("NT", bprop_nt), "TN": op("TN", bprop_tn)}
