// MindSpore "aot" custom-op kernels: float32 (batched) GEMM on the OpenBLAS that numpy ships.
//
// Why: on AVX-512 CPUs numpy's OpenBLAS (Cooperlake/SkylakeX kernels) reaches about twice the GFLOP/s
// of MindSpore 2.8's CPU MatMul (bench/results_ops.md). The library is opened at the first call from
// $MSD_BLAS_LIB (bench/studies/blas_custom.py sets it to numpy's libopenblas64_), so this file needs no BLAS
// headers or link flags: g++ -O2 -shared -fPIC blas_gemm.cc -o blas_gemm.so -ldl
//
// Three entry points, one per transpose pattern, so that forward and both gradients stay in this set:
//   GemmNN: C = A B,  GemmNT: C = A B^T,  GemmTN: C = A^T B
// A and B have the same rank >= 2 and the same leading (batch) dims; one sgemm per batch item.
#include <dlfcn.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {
typedef void (*sgemm_fn)(int order, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                         const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                         int64_t ldc);
const int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

sgemm_fn load() {
  static sgemm_fn fn = nullptr;
  if (fn) return fn;
  const char *path = getenv("MSD_BLAS_LIB");
  if (!path) return nullptr;
  void *lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (!lib) return nullptr;
  fn = reinterpret_cast<sgemm_fn>(dlsym(lib, "cblas_sgemm64_"));
  return fn;
}

int gemm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool ta, bool tb) {
  if (nparam != 3 || strcmp(dtypes[0], "float32") || strcmp(dtypes[1], "float32")) return 1;
  int nd = ndims[0];
  if (nd != ndims[1] || nd < 2) return 2;
  sgemm_fn sgemm = load();
  if (!sgemm) return 3;
  int64_t batch = 1;
  for (int d = 0; d < nd - 2; ++d) {
    if (shapes[0][d] != shapes[1][d]) return 5;
    batch *= shapes[0][d];
  }
  const int64_t *sa = shapes[0] + (nd - 2), *sb = shapes[1] + (nd - 2);
  int64_t m = ta ? sa[1] : sa[0], k = ta ? sa[0] : sa[1];
  int64_t n = tb ? sb[0] : sb[1];
  if ((tb ? sb[1] : sb[0]) != k) return 4;
  const float *a = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  float *c = static_cast<float *>(params[2]);
  for (int64_t i = 0; i < batch; ++i) {
    sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, a + i * sa[0] * sa[1], sa[1],
          b + i * sb[0] * sb[1], sb[1], 0.0f, c + i * m * n, n);
  }
  return 0;
}
}  // namespace

extern "C" int GemmNN(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                      void *extra) {
  return gemm(nparam, params, ndims, shapes, dtypes, false, false);
}
extern "C" int GemmNT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                      void *extra) {
  return gemm(nparam, params, ndims, shapes, dtypes, false, true);
}
extern "C" int GemmTN(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                      void *extra) {
  return gemm(nparam, params, ndims, shapes, dtypes, true, false);
}
