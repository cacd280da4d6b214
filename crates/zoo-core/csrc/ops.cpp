// libtorch operators that tch does not wrap (or wraps without an argument we need), as plain C
// functions for zoo-core (train::optim, ops):
// - at::_fused_adamw_, the kernel torch.optim.AdamW(fused=True) runs: one vectorised pass per
//   parameter instead of one kernel per arithmetic step;
// - at::leaky_relu with a slope (tch's leaky_relu has the fixed 0.01): one kernel each way,
//   where max(x, a x) costs a multiply, a maximum, and a masked backward;
// - linear (at::linear's semantics) with gemv.cpp's kernel for decoding-sized inputs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include <cstdio>
#include <exception>
#include <vector>

#include "gemv.h"

namespace {

// A linear layer with W stored (N, K) as torch's linear does (`transposed` false: x W^T + b) or
// (K, N) as GPT-2's Conv1D (`transposed` true: b + x W). gemv.cpp's kernels run when they apply:
// float32 on the CPU, contiguous W, nothing for autograd to record, and at most 4 rows of x
// (N, K) or one row (K, N). Otherwise libtorch: at::linear, or one at::addmm (the bias as the
// GEMM's starting value, as nn.Linear does).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                  bool transposed) {
  TORCH_CHECK(w.dim() == 2 && x.dim() >= 1, "expected x (..., K) and a 2-D weight, got ",
              x.sizes(), " and ", w.sizes());
  const int64_t k = transposed ? w.size(0) : w.size(1), n = transposed ? w.size(1) : w.size(0);
  const int64_t m = k > 0 ? x.numel() / k : 0;
  const bool grad = c10::GradMode::is_enabled() &&
                    (x.requires_grad() || w.requires_grad() || (b && b->requires_grad()));
  bool fast = !grad && zoo::gemv_available() && x.device().is_cpu() && w.device().is_cpu() &&
              x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat &&
              w.is_contiguous() && k > 0 && n > 0 && x.size(-1) == k && m >= 1 &&
              m <= (transposed ? 1 : 4);
  if (fast && b) {
    fast = b->device().is_cpu() && b->scalar_type() == at::kFloat && b->dim() == 1 &&
           b->size(0) == n;
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  if (!fast && !transposed) return at::linear(x, w, b);
  if (!fast) {
    const at::Tensor x2 = x.reshape({-1, k});
    return (b ? at::addmm(*b, x2, w) : at::mm(x2, w)).view(shape);
  }
  const at::Tensor xc = x.contiguous();
  const c10::optional<at::Tensor> bc = b ? c10::optional<at::Tensor>(b->contiguous()) : c10::nullopt;
  at::Tensor y = at::empty(shape, x.options());
  const float* xp = xc.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bc ? bc->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // Work in units of 16 rows of W (N, K) or 64 columns of W (K, N); a thread takes at least
  // ~256 KB of W.
  const int64_t unit = transposed ? 64 : 16;
  const int64_t grain = std::max<int64_t>(1, 65536 / (unit * k));
  at::parallel_for(0, (n + unit - 1) / unit, grain, [&](int64_t u0, int64_t u1) {
    const int64_t n0 = u0 * unit, n1 = std::min(n, u1 * unit);
    if (transposed) {
      zoo::gemv_t_cols(xp, wp, bp, yp, n, k, n0, n1);
    } else {
      zoo::gemv_rows(xp, m, wp, bp, yp, n, k, n0, n1);
    }
  });
  return y;
}

}  // namespace

extern "C" {

// Each tensor argument is an array of `n` pointers to at::Tensor (what tch's C_tensor is).
// `steps` holds the step count each parameter's bias correction uses (scalar f32 tensors).
// Returns 0, or 1 with the exception's message in `err`.
int zoo_fused_adamw(void* const* params, void* const* grads, void* const* exp_avgs,
                    void* const* exp_avg_sqs, void* const* steps, int64_t n, double lr,
                    double beta1, double beta2, double weight_decay, double eps, char* err,
                    size_t err_len) {
  try {
    auto list = [n](void* const* ptrs) {
      std::vector<at::Tensor> out;
      out.reserve(n);
      for (int64_t i = 0; i < n; ++i) out.push_back(*static_cast<at::Tensor*>(ptrs[i]));
      return out;
    };
    auto p = list(params), g = list(grads), m = list(exp_avgs), v = list(exp_avg_sqs),
         s = list(steps);
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}

// Returns a new at::Tensor (owned by the caller, freed by tch) or null with the message in `err`.
void* zoo_leaky_relu(void* x, double slope, char* err, size_t err_len) {
  try {
    return new at::Tensor(at::leaky_relu(*static_cast<at::Tensor*>(x), slope));
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return nullptr;
  }
}

// Returns a new at::Tensor or null with the message in `err`; `b` may be null; `transposed`
// nonzero: W is stored (K, N).
void* zoo_linear(void* x, void* w, void* b, int transposed, char* err, size_t err_len) {
  try {
    c10::optional<at::Tensor> bias;
    if (b) bias = *static_cast<at::Tensor*>(b);
    return new at::Tensor(
        linear(*static_cast<at::Tensor*>(x), *static_cast<at::Tensor*>(w), bias, transposed != 0));
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return nullptr;
  }
}

// Whether zoo_linear has its own kernel on this CPU.
int zoo_gemv_available() { return zoo::gemv_available() ? 1 : 0; }

}  // extern "C"
