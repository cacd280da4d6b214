// libtorch operators that tch does not wrap (or wraps without an argument we need), as plain C
// functions for zoo-core (train::optim, ops):
// - at::_fused_adamw_, the kernel torch.optim.AdamW(fused=True) runs: one vectorised pass per
//   parameter instead of one kernel per arithmetic step;
// - at::leaky_relu with a slope (tch's leaky_relu has the fixed 0.01): one kernel each way,
//   where max(x, a x) costs a multiply, a maximum, and a masked backward;
// - linear (at::linear's semantics) with gemv.cpp's kernel for decoding-sized inputs;
// - conv2d (at::conv2d's semantics) with wino.cpp's Winograd transforms for 3x3 stride-1
//   convolutions, differentiable through a custom autograd function.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include <cstdio>
#include <exception>
#include <mutex>
#include <vector>

#include "gemv.h"
#include "wino.h"

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

// A buffer of at least `numel` floats that lives across calls (grow-only), viewed as `shape`:
// fresh tensors of tens of MB cost more in page faults than the transforms that fill them.
at::Tensor reuse(at::Tensor& slot, at::IntArrayRef shape, const at::TensorOptions& opts) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (!slot.defined() || slot.numel() < numel) slot = at::empty({numel}, opts);
  return slot.narrow(0, 0, numel).view(shape);
}

// Transformed filters U (a^2, K, C) for w (K, C, r, r).
at::Tensor transform_weight(const at::Tensor& w_in, at::Tensor* slot) {
  const at::Tensor w = w_in.contiguous();
  const int64_t K = w.size(0), C = w.size(1);
  const int r = static_cast<int>(w.size(2));
  const int64_t e = zoo::wino::elems(r);
  at::Tensor u = slot ? reuse(*slot, {e, K, C}, w.options()) : at::empty({e, K, C}, w.options());
  const float* wp = w.data_ptr<float>();
  float* up = u.data_ptr<float>();
  at::parallel_for(0, K, std::max<int64_t>(1, 4096 / C), [&](int64_t k0, int64_t k1) {
    zoo::wino::weight_transform(r, wp, K, C, k0, k1, up);
  });
  return u;
}

// Transformed filters of weights that stay put (sampling: the same filters every step), kept
// while the weight tensor lives and is unchanged (same storage, same version counter), up to
// kCacheBytes in all; past that, filters are transformed per call.
constexpr int64_t kCacheBytes = int64_t(512) << 20;

struct CachedWeight {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> impl;
  const void* data;
  int64_t version;
  at::Tensor u;
};

at::Tensor cached_weight(const at::Tensor& w) {
  static std::mutex mu;
  static std::vector<CachedWeight> cache;
  std::lock_guard<std::mutex> lock(mu);
  int64_t bytes = 0;
  at::Tensor found;
  for (auto it = cache.begin(); it != cache.end();) {
    auto alive = it->impl.lock();
    if (!alive) {
      it = cache.erase(it);
      continue;
    }
    if (alive.get() == w.unsafeGetTensorImpl()) {
      if (it->data == w.data_ptr() && it->version == w._version()) {
        found = it->u;
      } else {
        it = cache.erase(it);
        continue;
      }
    }
    bytes += it->u.nbytes();
    ++it;
  }
  if (found.defined()) return found;
  at::Tensor u = transform_weight(w, nullptr);
  if (bytes + static_cast<int64_t>(u.nbytes()) <= kCacheBytes) {
    cache.push_back({c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
                         w.getIntrusivePtr()),
                     w.data_ptr(), w._version(), u});
  }
  return u;
}

// Scratch that lives across calls on the calling thread: the transformed filters, inputs and
// products.
struct Workspace {
  at::Tensor u, v, m;
};
thread_local Workspace ws;

// The tile grid of a convolution's output (Ho, Wo).
struct Tiles {
  int64_t th, tw;
  int64_t per_plane() const { return th * tw; }
};
Tiles tiles_for(int64_t Ho, int64_t Wo) {
  return {(Ho + zoo::wino::kOut - 1) / zoo::wino::kOut, (Wo + zoo::wino::kOut - 1) / zoo::wino::kOut};
}

// V (a^2, C, N * tiles): the transformed input tiles of x (N, C, H, W) padded by `pad`, for
// r x r filters.
at::Tensor transform_input(const at::Tensor& x, int r, int64_t pad, Tiles t) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = t.per_plane();
  const int64_t T = N * P;
  at::Tensor v = reuse(ws.v, {zoo::wino::elems(r), C, T}, x.options());
  const float* xp = x.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  at::parallel_for(0, N * C, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scratch(zoo::wino::scratch_size(r, t.th, t.tw));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / C, c = i % C;
      zoo::wino::input_plane(r, xp + i * H * W, H, W, pad, t.th, t.tw, vp + c * T + n * P, C * T,
                             scratch.data());
    }
  });
  return v;
}

// y = conv2d(x, w, b, stride 1, padding `pad`) for w (K, C, r, r) by Winograd F(4x4, r x r):
// the a^2 transformed positions each get one GEMM, U (K, C) x V (C, tiles), in a single bmm.
// `cache`: w is a parameter that sampling reuses unchanged (see cached_weight).
at::Tensor wino_conv(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& b, int64_t pad,
                     bool cache) {
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), K = w.size(0);
  const int r = static_cast<int>(w.size(2));
  const int64_t Ho = x.size(2) + 2 * pad - (r - 1), Wo = x.size(3) + 2 * pad - (r - 1);
  const Tiles t = tiles_for(Ho, Wo);
  const int64_t P = t.per_plane(), T = N * P;
  const at::Tensor u = cache ? cached_weight(w) : transform_weight(w, &ws.u);
  const at::Tensor v = transform_input(x, r, pad, t);
  at::Tensor m = reuse(ws.m, {zoo::wino::elems(r), K, T}, x.options());
  at::bmm_out(m, u, v);
  at::Tensor y = at::empty({N, K, Ho, Wo}, x.options());
  const at::Tensor bc = b.defined() ? b.contiguous() : b;
  const float* bp = bc.defined() ? bc.data_ptr<float>() : nullptr;
  const float* mp = m.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N * K, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / K, k = i % K;
      zoo::wino::output_plane(r, mp + k * T + n * P, K * T, t.th, t.tw, bp ? bp[k] : 0.0f,
                              yp + i * Ho * Wo, Ho, Wo);
    }
  });
  return y;
}

// The filters' gradient of wino_conv(x, w, pad) given the output's gradient g, in the same
// Winograd domain (the adjoint of the forward): per position, the transformed gradient tiles
// times the transformed input tiles summed over tiles (one bmm), then G^T . G back to 3x3.
at::Tensor wino_grad_weight(const at::Tensor& x_in, const at::Tensor& g_in, int r, int64_t pad) {
  const at::Tensor x = x_in.contiguous(), g = g_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), K = g.size(1), Ho = g.size(2), Wo = g.size(3);
  const Tiles t = tiles_for(Ho, Wo);
  const int64_t P = t.per_plane(), T = N * P;
  const at::Tensor v = transform_input(x, r, pad, t);
  at::Tensor gt = reuse(ws.m, {zoo::wino::elems(r), K, T}, x.options());
  const float* gp = g.data_ptr<float>();
  float* gtp = gt.data_ptr<float>();
  at::parallel_for(0, N * K, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / K, k = i % K;
      zoo::wino::grad_plane(r, gp + i * Ho * Wo, Ho, Wo, t.th, t.tw, gtp + k * T + n * P, K * T);
    }
  });
  at::Tensor m = reuse(ws.u, {zoo::wino::elems(r), K, C}, x.options());
  at::bmm_out(m, gt, v.transpose(1, 2));
  at::Tensor dw = at::empty({K, C, r, r}, x.options());
  const float* mp = m.data_ptr<float>();
  float* dwp = dw.data_ptr<float>();
  at::parallel_for(0, K, std::max<int64_t>(1, 4096 / C), [&](int64_t k0, int64_t k1) {
    zoo::wino::weight_grad(r, mp, K, C, k0, k1, dwp);
  });
  return dw;
}

// The Winograd convolution for autograd. Gradients: the input's is the convolution of the
// output's gradient with the flipped, transposed filters (Winograd again, padding r - 1 - pad);
// the filters' is wino_grad_weight, the bias's a sum. A backward that builds a graph
// (create_graph) runs libtorch's convolution backward instead, so second derivatives work.
struct WinoConv : public torch::autograd::Function<WinoConv> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b, int64_t pad) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["pad"] = pad;
    ctx->saved_data["bias"] = b.numel() > 0;
    return wino_conv(x, w, b.numel() > 0 ? b : at::Tensor(), pad, false);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const int64_t pad = ctx->saved_data["pad"].toInt();
    const bool bias = ctx->saved_data["bias"].toBool();
    const at::Tensor g = grads[0].contiguous();
    at::Tensor gx, gw, gb;
    if (c10::GradMode::is_enabled()) {
      // create_graph (a gradient penalty): libtorch's convolution backward, which autograd can
      // differentiate again; the Winograd kernels below cannot be.
      const bool need_b = bias && ctx->needs_input_grad(2);
      auto r = at::convolution_backward(
          g, x, w, need_b ? at::OptionalIntArrayRef({w.size(0)}) : c10::nullopt, {1, 1},
          {pad, pad}, {1, 1}, false, {0, 0}, 1,
          {ctx->needs_input_grad(0), ctx->needs_input_grad(1), need_b});
      return {std::get<0>(r), std::get<1>(r), std::get<2>(r), at::Tensor()};
    }
    const int r = static_cast<int>(w.size(2));
    if (ctx->needs_input_grad(0))
      gx = wino_conv(g, w.transpose(0, 1).flip({2, 3}), at::Tensor(), r - 1 - pad, false);
    if (ctx->needs_input_grad(1)) gw = wino_grad_weight(x, g, r, pad);
    if (bias && ctx->needs_input_grad(2)) gb = g.sum({0, 2, 3});
    return {gx, gw, gb, at::Tensor()};
  }
};

// When a convolution goes to Winograd: float32 on the CPU, no groups, at least 16 channels each
// way (fewer leave the GEMMs nothing to save) and at least kMinTiles output tiles (small GEMMs
// run below the direct convolution's speed).
constexpr int64_t kMinTiles = 16;

bool float_cpu(const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat; }

bool wino_fits(int64_t N, int64_t C, int64_t K, int64_t Ho, int64_t Wo) {
  return C >= 16 && K >= 16 && Ho > 0 && Wo > 0 && N * ((Ho + 3) / 4) * ((Wo + 3) / 4) >= kMinTiles;
}

// Square filters (dim 2 and 3 of w), float32 tensors on the CPU, channels that agree (`in_dim`:
// w's dimension of input channels), a bias of `out` values if any.
bool plain(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t in_dim,
           int64_t out) {
  return float_cpu(x) && float_cpu(w) && x.dim() == 4 && w.dim() == 4 && w.size(2) == w.size(3) &&
         w.size(in_dim) == x.size(1) &&
         (!b.defined() || (float_cpu(b) && b.dim() == 1 && b.size(0) == out));
}

// wino_conv, through autograd when anything needs a gradient.
at::Tensor run_wino(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t pad,
                    bool cache) {
  const bool grad = c10::GradMode::is_enabled() &&
                    (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  // (custom functions take no undefined inputs: no bias is an empty one)
  if (grad) return WinoConv::apply(x, w, b.defined() ? b : at::empty({0}, x.options()), pad);
  return wino_conv(x, w, b, pad, cache);
}

// conv2d with stride (sh, sw) and padding (ph, pw). Winograd takes 3x3 filters at stride 1
// (padding 0-2), and 4x4 filters at stride 2 (DCGAN's, conv VAEs'): those are four 2x2 stride-1
// convolutions, one per phase of the input (even/odd rows x even/odd columns), i.e. one 2x2
// convolution over the space-to-depth input (pixel_unshuffle) with 4C channels. The
// rearrangements are libtorch ops, so autograd differentiates through them.
at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t sh,
                  int64_t sw, int64_t ph, int64_t pw) {
  if (plain(x, w, b, 1, w.size(0)) && sh == sw && ph == pw && ph >= 0) {
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(0);
    const int64_t k = w.size(2), p = ph, Hp = H + 2 * p, Wp = W + 2 * p;
    if (k == 3 && sh == 1 && p <= 2 && wino_fits(N, C, K, Hp - 2, Wp - 2)) return run_wino(x, w, b, p, true);
    if (k == 4 && sh == 2 && Hp % 2 == 0 && Wp % 2 == 0 && wino_fits(N, 4 * C, K, Hp / 2 - 1, Wp / 2 - 1)) {
      const at::Tensor xs = at::pixel_unshuffle(p > 0 ? at::constant_pad_nd(x, {p, p, p, p}) : x, 2);
      // w[k, c, 2u + s, 2v + t] -> phase filter [k, 4c + 2s + t, u, v]
      const at::Tensor w2 =
          w.reshape({K, C, 2, 2, 2, 2}).permute({0, 1, 3, 5, 2, 4}).reshape({K, 4 * C, 2, 2});
      return run_wino(xs, w2, b, 0, false);
    }
  }
  return at::conv2d(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt, {sh, sw},
                    {ph, pw});
}

// conv_transpose2d (no output padding) with w (C, K, k, k). Winograd takes 4x4 filters at
// stride 2 with padding 1 (DCGAN's generator, conv VAE decoders): output pixel (2q + s, 2r + t)
// is a 2x2 correlation of the input padded by 1 at (q + s, r + t) with the filter taps
// w[., ., 3 - s - 2u, 3 - t - 2v]; one 2x2 convolution with 4K output channels computes all four
// phases, which then interleave (the inverse of the space-to-depth above).
at::Tensor conv_transpose2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  if (plain(x, w, b, 0, w.size(1)) && sh == 2 && sw == 2 && ph == 1 && pw == 1 && w.size(2) == 4) {
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(1);
    if (wino_fits(N, C, 4 * K, H + 1, W + 1) && H >= 8 && W >= 8) {
      // flipped, tap 2u + s -> phase filter [4k + 2s + t, c, u, v]
      const at::Tensor w2 = w.flip({2, 3})
                                .reshape({C, K, 2, 2, 2, 2})
                                .permute({1, 3, 5, 0, 2, 4})
                                .reshape({4 * K, C, 2, 2});
      const at::Tensor z =
          run_wino(at::constant_pad_nd(x, {1, 1, 1, 1}), w2, at::Tensor(), 0, false)
              .view({N, K, 2, 2, H + 1, W + 1});
      std::vector<at::Tensor> phases;
      for (int64_t s = 0; s < 2; ++s)
        for (int64_t t = 0; t < 2; ++t)
          phases.push_back(z.select(2, s).select(2, t).narrow(2, s, H).narrow(3, t, W));
      at::Tensor y = at::stack(phases, 2)
                         .view({N, K, 2, 2, H, W})
                         .permute({0, 1, 4, 2, 5, 3})
                         .reshape({N, K, 2 * H, 2 * W});
      return b.defined() ? y + b.view({1, K, 1, 1}) : y;
    }
  }
  return at::conv_transpose2d(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt,
                              {sh, sw}, {ph, pw});
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

// conv2d, or with `transposed` nonzero conv_transpose2d. Returns a new at::Tensor or null with
// the message in `err`; `b` may be null.
void* zoo_conv2d(void* x, void* w, void* b, int transposed, int64_t sh, int64_t sw, int64_t ph,
                 int64_t pw, char* err, size_t err_len) {
  try {
    const at::Tensor& xt = *static_cast<at::Tensor*>(x);
    const at::Tensor& wt = *static_cast<at::Tensor*>(w);
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    return new at::Tensor(transposed ? conv_transpose2d(xt, wt, bias, sh, sw, ph, pw)
                                     : conv2d(xt, wt, bias, sh, sw, ph, pw));
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return nullptr;
  }
}

// Whether zoo_linear has its own kernel on this CPU.
int zoo_gemv_available() { return zoo::gemv_available() ? 1 : 0; }

}  // extern "C"
