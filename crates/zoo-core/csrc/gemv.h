// Float32 matrix-vector kernels for linear layers when decoding: W stored (N, K) as torch's
// linear stores it (1-4 rows of x), or (K, N) as GPT-2's Conv1D (one row). See gemv.cpp.
#pragma once
#include <cstdint>

namespace zoo {

// Whether this CPU runs the kernel (x86-64 with AVX-512F); otherwise callers use libtorch's.
bool gemv_available();

// Output rows [n0, n1) of y (M, N) = x (M, K) W^T (+ b): x, W, y contiguous row-major, b of N
// values or null. Touches only y[:, n0:n1], so disjoint row ranges can run on different threads.
void gemv_rows(const float* x, int64_t m, const float* w, const float* b, float* y, int64_t n,
               int64_t k, int64_t n0, int64_t n1);

// Output columns [n0, n1) of y (N) = b + x (K) W with W (K, N) row-major (the layout of
// GPT-2's Conv1D and of torch.addmm(b, x, W)); b of N values or null.
void gemv_t_cols(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t k,
                 int64_t n0, int64_t n1);

}  // namespace zoo
