// libtorch operators that tch does not wrap (or wraps without an argument we need), as plain C
// functions for zoo-core (train::optim, ops):
// - at::_fused_adamw_, the kernel torch.optim.AdamW(fused=True) runs: one vectorised pass per
//   parameter instead of one kernel per arithmetic step;
// - at::leaky_relu with a slope (tch's leaky_relu has the fixed 0.01): one kernel each way,
//   where max(x, a x) costs a multiply, a maximum, and a masked backward.
#include <ATen/ATen.h>

#include <cstdio>
#include <exception>
#include <vector>

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

}  // extern "C"
