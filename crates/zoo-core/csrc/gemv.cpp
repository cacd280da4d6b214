// y = x W^T + b for a few rows of x, reading W (N, K) once at streaming speed.
//
// At batch 1 a linear layer is a matrix-vector product that reads every weight once, so its
// speed is the speed at which W streams from memory. libtorch hands this shape to MKL's sgemv,
// which on this machine (AMD EPYC, AVX-512) reads W at about 13 GB/s on one thread where a plain
// streaming sum reads 20-24 GB/s (docs/benchmarks.md). Here each step takes 16 rows of W
// (16 concurrent sequential streams, one accumulator each) against one 16-float slice of x,
// which stays in L1. For 2-4 rows of x each block of W is reused from
// cache for the next row of x. K need not be a multiple of 16 (masked loads), nor N of 16.
//
// W stored (K, N) instead (GPT-2's Conv1D: y = b + x W) is read 8 rows at a time: 8 sequential
// streams, each 16-column slice of y loaded from L1, given 8 FMAs, stored back.
#include "gemv.h"

#include <algorithm>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ZOO_GEMV_X86 1
#endif

namespace zoo {

#ifdef ZOO_GEMV_X86

bool gemv_available() { return __builtin_cpu_supports("avx512f"); }

namespace {

constexpr int kRows = 16;

// Dot products of R rows of W (starting at row n) with one row of x: out[r] = W[n + r] . x.
template <int R>
__attribute__((target("avx512f"))) void dot_rows(const float* x, const float* w, int64_t k,
                                                  float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w + r * k + i), xv, acc[r]);
  }
  if (i < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - i)) - 1u);
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x + i);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w + r * k + i), xv, acc[r]);
  }
  // (by hand: GCC 12's _mm512_reduce_add_ps warns about its own uninitialised temporaries)
  alignas(64) float lanes[16];
  for (int r = 0; r < R; ++r) {
    _mm512_store_ps(lanes, acc[r]);
    float s = 0.0f;
    for (float v : lanes) s += v;
    out[r] = s;
  }
}

// y[j0:j1] += sum over the R rows of W starting at row i of x[i + r] W[i + r, j0:j1].
template <int R>
__attribute__((target("avx512f"))) void axpy_rows(const float* x, const float* w, float* y,
                                                   int64_t n, int64_t j0, int64_t j1) {
  __m512 xs[R];
  for (int r = 0; r < R; ++r) xs[r] = _mm512_set1_ps(x[r]);
  int64_t j = j0;
  for (; j + 16 <= j1; j += 16) {
    __m512 acc = _mm512_loadu_ps(y + j);
    for (int r = 0; r < R; ++r) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + r * n + j), xs[r], acc);
    _mm512_storeu_ps(y + j, acc);
  }
  if (j < j1) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (j1 - j)) - 1u);
    __m512 acc = _mm512_maskz_loadu_ps(mask, y + j);
    for (int r = 0; r < R; ++r)
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w + r * n + j), xs[r], acc);
    _mm512_mask_storeu_ps(y + j, mask, acc);
  }
}

}  // namespace

void gemv_t_cols(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t k,
                 int64_t n0, int64_t n1) {
  // y's slice stays in L1 while W streams past it: at most 4096 columns (16 KB) at a time.
  constexpr int64_t kTile = 4096;
  for (int64_t j0 = n0; j0 < n1; j0 += kTile) {
    const int64_t j1 = std::min(n1, j0 + kTile);
    for (int64_t j = j0; j < j1; ++j) y[j] = b ? b[j] : 0.0f;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) axpy_rows<8>(x + i, w + i * n, y, n, j0, j1);
    for (; i < k; ++i) axpy_rows<1>(x + i, w + i * n, y, n, j0, j1);
  }
}

void gemv_rows(const float* x, int64_t m, const float* w, const float* b, float* y, int64_t n,
               int64_t k, int64_t n0, int64_t n1) {
  float out[kRows];
  int64_t row = n0;
  for (; row + kRows <= n1; row += kRows) {
    for (int64_t j = 0; j < m; ++j) {
      dot_rows<kRows>(x + j * k, w + row * k, k, out);
      float* yj = y + j * n + row;
      for (int r = 0; r < kRows; ++r) yj[r] = b ? out[r] + b[row + r] : out[r];
    }
  }
  for (; row < n1; ++row) {
    for (int64_t j = 0; j < m; ++j) {
      dot_rows<1>(x + j * k, w + row * k, k, out);
      y[j * n + row] = b ? out[0] + b[row] : out[0];
    }
  }
}

#else

bool gemv_available() { return false; }

void gemv_rows(const float*, int64_t, const float*, const float*, float*, int64_t, int64_t,
               int64_t, int64_t) {}

void gemv_t_cols(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t,
                 int64_t) {}

#endif

}  // namespace zoo
