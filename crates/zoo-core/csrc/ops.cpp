// libtorch operators that tch does not wrap (or wraps without an argument we need), as plain C
// functions for zoo-core (train::optim, ops):
// - at::_fused_adamw_, the kernel torch.optim.AdamW(fused=True) runs: one vectorised pass per
//   parameter instead of one kernel per arithmetic step;
// - at::leaky_relu with a slope (tch's leaky_relu has the fixed 0.01): one kernel each way,
//   where max(x, a x) costs a multiply, a maximum, and a masked backward;
// - linear (at::linear's semantics) with gemv.cpp's kernel for decoding-sized inputs;
// - conv2d (at::conv2d's semantics) with wino.cpp's Winograd transforms for 3x3 stride-1
//   convolutions, differentiable through a custom autograd function; the GEMMs between the
//   transforms are oneDNN's matmul.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include <cstdio>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <exception>
#include <mutex>
#include <vector>

#include "convt_k4s2.h"
#include "gemv.h"
#include "wino.h"

// oneDNN's matmul as libtorch builds it (ATen/native/mkldnn/Matmul.cpp; exported by
// libtorch_cpu, its header not shipped): result = beta result + alpha mat1 mat2, 2-D or batched.
// On this AMD EPYC it runs the Winograd GEMMs faster than at::bmm's MKL sgemm
// (docs/benchmarks.md).
namespace at::native {
TORCH_API void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result,
                             float beta, float alpha);
}

namespace {

// libtorch's mkldnn_matmul refuses to run (whatever the dtype) on x86 CPUs without AVX-512
// BW/VL/DQ; there every product takes at::matmul_out (MKL's sgemm) instead.
bool dnnl_matmul_usable() {
  static const bool ok = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512dq");
  return ok;
}

// result = mat1 mat2 (2-D or batched) by oneDNN's matmul where libtorch allows it.
void matmul_into(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result) {
  if (dnnl_matmul_usable()) {
    at::native::mkldnn_matmul(mat1, mat2, result, 0.0f, 1.0f);
  } else {
    at::Tensor out = result;
    at::matmul_out(out, mat1, mat2);
  }
}

// floor(a / b) for b > 0 (C++'s / truncates towards zero).
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// out (m, n) = a (m, k) b (k, n) by oneDNN's matmul; a and b contiguous or transposed views.
at::Tensor dnnl_mm(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  matmul_into(a, b, out);
  return out;
}

// A linear layer whose three GEMMs (forward, and in the backward the input's and the weight's
// gradients) are oneDNN's matmul rather than MKL's sgemm (at::linear / at::addmm): on this
// AMD EPYC it runs the training-sized products of the VAE's and the LLM presets' layers 5-20%
// faster (docs/benchmarks.md). x (m, k); w (n, k), or (k, n) when `transposed`. A backward
// that builds a graph (gradient penalties) uses libtorch's differentiable products.
struct DnnlLinear : public torch::autograd::Function<DnnlLinear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b, bool transposed) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["t"] = transposed;
    ctx->saved_data["bias"] = b.numel() > 0;
    return run(x, w, b.numel() > 0 ? b : at::Tensor(), transposed);
  }

  static at::Tensor run(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        bool transposed) {
    at::Tensor y = dnnl_mm(x, transposed ? w : w.t());
    if (b.defined()) y.add_(b);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], g = grads[0].contiguous();
    const bool transposed = ctx->saved_data["t"].toBool();
    const bool graph = c10::GradMode::is_enabled();
    auto mm = [&](const at::Tensor& a, const at::Tensor& c) {
      return graph ? at::mm(a, c) : dnnl_mm(a, c);
    };
    at::Tensor gx, gw, gb;
    // y = x W^T: gx = g W, gW = g^T x; y = x W: gx = g W^T, gW = x^T g
    if (ctx->needs_input_grad(0)) gx = mm(g, transposed ? w.t() : w);
    if (ctx->needs_input_grad(1)) gw = transposed ? mm(x.t(), g) : mm(g.t(), x);
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = g.sum(0);
    return {gx, gw, gb, at::Tensor()};
  }
};

// Whether linear(x, w, b, transposed) runs as DnnlLinear: float32 on the CPU, products of at
// least 2^20 multiply-adds over 32+ rows of x (smaller ones cost more to set up in oneDNN than
// in MKL).
bool dnnl_linear_chosen(const at::Tensor& x, const at::Tensor& w,
                        const c10::optional<at::Tensor>& b, bool transposed) {
  const auto f32cpu = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided;
  };
  if (w.dim() != 2 || x.dim() < 1 || !at::hasMKLDNN() || !f32cpu(x) || !f32cpu(w) ||
      !w.is_contiguous())
    return false;
  const int64_t k = transposed ? w.size(0) : w.size(1), n = transposed ? w.size(1) : w.size(0);
  const int64_t m = k > 0 ? x.numel() / k : 0;
  return x.size(-1) == k && (!b || (f32cpu(*b) && b->dim() == 1 && b->size(0) == n)) &&
         m >= 32 && m * k * n >= (int64_t{1} << 20);
}

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
  if (!fast && dnnl_linear_chosen(x, w, b, transposed)) {
    const at::Tensor x2 = x.reshape({m, k}).contiguous();
    if (!grad) return DnnlLinear::run(x2, w, b ? *b : at::Tensor(), transposed).view(shape);
    return DnnlLinear::apply(x2, w, b ? *b : at::empty({0}, x.options()), transposed).view(shape);
  }
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

// Transformed filters U (36, K, C) for w (K, C, 3, 3).
at::Tensor transform_weight(const at::Tensor& w_in, at::Tensor* slot) {
  const at::Tensor w = w_in.contiguous();
  const int64_t K = w.size(0), C = w.size(1);
  const int64_t e = zoo::wino::kElems;
  at::Tensor u = slot ? reuse(*slot, {e, K, C}, w.options()) : at::empty({e, K, C}, w.options());
  const float* wp = w.data_ptr<float>();
  float* up = u.data_ptr<float>();
  at::parallel_for(0, K, std::max<int64_t>(1, 4096 / C), [&](int64_t k0, int64_t k1) {
    zoo::wino::weight_transform(wp, K, C, k0, k1, up);
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

std::mutex cache_mu;
std::vector<CachedWeight> cache;

// Drops the entries whose weight is gone or has changed (training: every step); returns the
// entry for w if it is still good, and the bytes the cache holds. Call with cache_mu held.
at::Tensor sweep_cache(const at::Tensor* w, int64_t* bytes) {
  at::Tensor found;
  *bytes = 0;
  for (auto it = cache.begin(); it != cache.end();) {
    auto alive = it->impl.lock();
    const bool stale = !alive || it->data != alive->data() || it->version != alive->version_counter().current_version();
    if (stale) {
      it = cache.erase(it);
      continue;
    }
    if (w && alive.get() == w->unsafeGetTensorImpl()) found = it->u;
    *bytes += it->u.nbytes();
    ++it;
  }
  return found;
}

at::Tensor cached_weight(const at::Tensor& w, at::Tensor (*transform)(const at::Tensor&, at::Tensor*)) {
  std::lock_guard<std::mutex> lock(cache_mu);
  int64_t bytes = 0;
  at::Tensor found = sweep_cache(&w, &bytes);
  if (found.defined()) return found;
  at::Tensor u = transform(w, nullptr);
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

// V (36, C, N * tiles): the transformed input tiles of x (N, C, H, W) padded by `pad`.
at::Tensor transform_input(const at::Tensor& x, int64_t pad, Tiles t) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = t.per_plane();
  const int64_t T = N * P;
  at::Tensor v = reuse(ws.v, {zoo::wino::kElems, C, T}, x.options());
  const float* xp = x.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> scratch(zoo::wino::scratch_size(N, t.th, t.tw));
    for (int64_t c = c0; c < c1; ++c) {
      zoo::wino::input_channel(xp + c * H * W, C * H * W, N, H, W, pad, t.th, t.tw, vp + c * T,
                               scratch.data(), C * T);
    }
  });
  return v;
}

// y = conv2d(x, w, b, stride 1, padding `pad`) for w (K, C, 3, 3) by Winograd F(4x4, 3x3): the
// 36 transformed positions each get one GEMM, U (K, C) x V (C, tiles), in one batched
// oneDNN matmul.
// `cache`: w is a parameter that sampling reuses unchanged (see cached_weight).
at::Tensor wino_conv(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& b, int64_t pad,
                     bool cache) {
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), K = w.size(0);
  const int64_t Ho = x.size(2) + 2 * pad - 2, Wo = x.size(3) + 2 * pad - 2;
  const Tiles t = tiles_for(Ho, Wo);
  const int64_t P = t.per_plane(), T = N * P;
  const at::Tensor u = cache ? cached_weight(w, transform_weight) : transform_weight(w, &ws.u);
  const at::Tensor v = transform_input(x, pad, t);
  at::Tensor m = reuse(ws.m, {zoo::wino::kElems, K, T}, x.options());
  matmul_into(u, v, m);
  at::Tensor y = at::empty({N, K, Ho, Wo}, x.options());
  const at::Tensor bc = b.defined() ? b.contiguous() : b;
  const float* bp = bc.defined() ? bc.data_ptr<float>() : nullptr;
  const float* mp = m.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      zoo::wino::output_channel(mp + k * T, K * T, N, t.th, t.tw, bp ? bp[k] : 0.0f,
                                yp + k * Ho * Wo, K * Ho * Wo, Ho, Wo);
    }
  });
  return y;
}

// The filters' gradient of wino_conv(x, w, pad) given the output's gradient g, in the same
// Winograd domain (the adjoint of the forward): per position, the transformed gradient tiles
// times the transformed input tiles summed over tiles (one batched matmul), then G^T . G back
// to 3x3.
at::Tensor wino_grad_weight(const at::Tensor& x_in, const at::Tensor& g_in, int64_t pad) {
  const at::Tensor x = x_in.contiguous(), g = g_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), K = g.size(1), Ho = g.size(2), Wo = g.size(3);
  const Tiles t = tiles_for(Ho, Wo);
  const int64_t P = t.per_plane(), T = N * P;
  const at::Tensor v = transform_input(x, pad, t);
  at::Tensor gt = reuse(ws.m, {zoo::wino::kElems, K, T}, x.options());
  const float* gp = g.data_ptr<float>();
  float* gtp = gt.data_ptr<float>();
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      zoo::wino::grad_channel(gp + k * Ho * Wo, K * Ho * Wo, N, Ho, Wo, t.th, t.tw, gtp + k * T,
                              K * T);
    }
  });
  at::Tensor m = reuse(ws.u, {zoo::wino::kElems, K, C}, x.options());
  matmul_into(gt, v.transpose(1, 2), m);
  at::Tensor dw = at::empty({K, C, 3, 3}, x.options());
  const float* mp = m.data_ptr<float>();
  float* dwp = dw.data_ptr<float>();
  at::parallel_for(0, K, std::max<int64_t>(1, 4096 / C), [&](int64_t k0, int64_t k1) {
    zoo::wino::weight_grad(mp, K, C, k0, k1, dwp);
  });
  return dw;
}

// Transformed filters U (6, K, C) for w (K, C, 3) of a 1-D convolution.
at::Tensor transform_weight_1d(const at::Tensor& w_in, at::Tensor* slot) {
  const at::Tensor w = w_in.contiguous();
  const int64_t K = w.size(0), C = w.size(1);
  at::Tensor u = slot ? reuse(*slot, {6, K, C}, w.options()) : at::empty({6, K, C}, w.options());
  const float* wp = w.data_ptr<float>();
  float* up = u.data_ptr<float>();
  at::parallel_for(0, K, std::max<int64_t>(1, 4096 / C), [&](int64_t k0, int64_t k1) {
    zoo::wino::weight_transform_1d(wp, K, C, k0, k1, up);
  });
  return u;
}

// y = conv1d(x, w, b, dilation d, padding d) for w (K, C, 3) by Winograd F(4, 3) on each
// residue's subsequence: six GEMMs, U (K, C) x V (C, tiles), in one batched oneDNN matmul.
at::Tensor wino_conv1d(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& b, int64_t d,
                       const at::Tensor& add) {
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), K = w.size(0);
  const int64_t tq = ((T + d - 1) / d + 3) / 4, P = d * tq, J = N * P;
  // tile j: sequence j / P; within it residue j % d, the (j % P) / d-th tile of 4 on it
  std::vector<zoo::wino::Tile1d> tiles(J);
  for (int64_t j = 0; j < J; ++j) tiles[j] = {j / P, j % d + 4 * ((j % P) / d) * d};
  const at::Tensor u = cached_weight(w, transform_weight_1d);
  at::Tensor v = reuse(ws.v, {6, C, J}, x.options());
  const float* xp = x.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      zoo::wino::input_channel_1d(xp + c * T, C * T, tiles.data(), J, T, d, vp + c * J, C * J);
  });
  at::Tensor m = reuse(ws.m, {6, K, J}, x.options());
  matmul_into(u, v, m);
  at::Tensor y = at::empty({N, K, T}, x.options());
  const at::Tensor bc = b.defined() ? b.contiguous() : b;
  const float* bp = bc.defined() ? bc.data_ptr<float>() : nullptr;
  const float* mp = m.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* ap = add.defined() ? add.data_ptr<float>() : nullptr;
  const int64_t as0 = add.defined() ? add.stride(0) : 0, as1 = add.defined() ? add.stride(1) : 0;
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      zoo::wino::output_channel_1d(mp + k * J, K * J, tiles.data(), J, T, d, bp ? bp[k] : 0.0f,
                                   ap ? ap + k * as1 : nullptr, as0, yp + k * T, K * T);
  });
  return y;
}

// The Winograd convolution for autograd. Gradients: the input's is the convolution of the
// output's gradient with the flipped, transposed filters (Winograd again, padding 2 - pad);
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
    if (ctx->needs_input_grad(0))
      gx = wino_conv(g, w.transpose(0, 1).flip({2, 3}), at::Tensor(), 2 - pad, false);
    if (ctx->needs_input_grad(1)) gw = wino_grad_weight(x, g, pad);
    if (bias && ctx->needs_input_grad(2)) gb = g.sum({0, 2, 3});
    return {gx, gw, gb, at::Tensor()};
  }
};

// When a convolution goes to Winograd: float32 3x3 filters on the CPU, stride 1, the same
// padding (0-2) on both axes, no groups, enough channels and enough output tiles
// (docs/benchmarks.md, examples/bench_conv.rs). The GEMMs cost C K per tile and the transforms
// C + K, so C K / (C + K) >= kMinChannels (64 in and out: 32; 32 and 32 measured slower than
// the direct convolution). Small batched GEMMs run below the direct convolution's speed, more
// so in training, where the filters' gradient is one more.
constexpr int64_t kMinTiles = 16, kMinTilesTrain = 64, kMinChannels = 32;

bool float_cpu(const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat; }

bool needs_grad(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return c10::GradMode::is_enabled() &&
         (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
}

// No bias, or one float32 CPU value per output channel of w.
bool bias_fits(const at::Tensor& b, const at::Tensor& w) {
  return !b.defined() || (float_cpu(b) && b.dim() == 1 && b.size(0) == w.size(0));
}

// Whether conv2d(x, w, b, stride, padding) runs as Winograd here.
bool wino_chosen(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t sh,
                 int64_t sw, int64_t ph, int64_t pw) {
  const bool fits = float_cpu(x) && float_cpu(w) && x.dim() == 4 && w.dim() == 4 &&
                    w.size(2) == 3 && w.size(3) == 3 && sh == 1 && sw == 1 && ph == pw &&
                    ph >= 0 && ph <= 2 && w.size(1) == x.size(1) &&
                    w.size(0) * w.size(1) >= kMinChannels * (w.size(0) + w.size(1)) &&
                    bias_fits(b, w);
  if (!fits) return false;
  const int64_t ho = x.size(2) + 2 * ph - 2, wo = x.size(3) + 2 * pw - 2;
  const int64_t tiles = x.size(0) * ((ho + 3) / 4) * ((wo + 3) / 4);
  return ho > 0 && wo > 0 && tiles >= (needs_grad(x, w, b) ? kMinTilesTrain : kMinTiles);
}

// A transposed convolution with few output channels as one batched GEMM and a scatter:
// columns (N, K kh kw, H W) = W^T (K kh kw, C) x X_n (C, H W), then each column adds into the
// output pixels its kernel tap covers (col2im). x (N, C, H, W), w (C, K, kh, kw), output
// (N, K, OH, OW) with oy = iy sh - ph + ky; no bias. oneDNN's deconvolution runs such layers
// (the last layers of DCGAN's generator and the conv VAE's decoder, and the input gradient of a
// convolution with 1-3 input channels) at 4-15 GFLOP/s here; the GEMM runs at sgemm speed.
at::Tensor gemm_convt(const at::Tensor& x, const at::Tensor& w, int64_t sh, int64_t sw, int64_t ph,
                      int64_t pw, int64_t OH, int64_t OW) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = w.size(1), kh = w.size(2), kw = w.size(3), P = K * kh * kw;
  at::Tensor y = at::zeros({N, K, OH, OW}, x.options());
  float* yp = y.data_ptr<float>();
  if (!x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    // channels-last x: the pixels' rows are X_n^T (H W, C), so the columns come out per pixel,
    // (N H W, K kh kw) = X^T W in one GEMM, and each pixel adds its kh x kw patch per channel.
    const at::Tensor cols = at::mm(x.permute({0, 2, 3, 1}).reshape({N * H * W, C}), w.reshape({C, P}));
    const float* cp = cols.data_ptr<float>();
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t iy = 0; iy < H; ++iy) {
          for (int64_t ix = 0; ix < W; ++ix) {
            const float* c = cp + ((n * H + iy) * W + ix) * P;
            for (int64_t k = 0; k < K; ++k) {
              float* out = yp + (n * K + k) * OH * OW;
              for (int64_t ky = 0; ky < kh; ++ky) {
                const int64_t oy = iy * sh - ph + ky;
                if (oy < 0 || oy >= OH) continue;
                for (int64_t kx = 0; kx < kw; ++kx) {
                  const int64_t ox = ix * sw - pw + kx;
                  if (ox >= 0 && ox < OW) out[oy * OW + ox] += c[(k * kh + ky) * kw + kx];
                }
              }
            }
          }
        }
      }
    });
    return y;
  }
  // (bmm with the small W^T repeated per image writes the columns in place; at::matmul of a
  // matrix and a batch would transpose both big operands through copies)
  const at::Tensor wt = w.reshape({C, P}).t().unsqueeze(0).expand({N, P, C}).contiguous();
  const at::Tensor cols = at::bmm(wt, x.contiguous().view({N, C, H * W}));
  const float* cp = cols.data_ptr<float>();
  at::parallel_for(0, N * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nk = begin; nk < end; ++nk) {
      float* out = yp + nk * OH * OW;
      const float* c0 = cp + nk * kh * kw * H * W;  // (n, k) is row block n P + k kh kw
      for (int64_t ky = 0; ky < kh; ++ky) {
        for (int64_t kx = 0; kx < kw; ++kx) {
          const float* c = c0 + (ky * kw + kx) * H * W;
          // columns ix with 0 <= ix sw - pw + kx < OW (both bounds rounded towards -inf: C++'s /
          // truncates, which for a negative numerator let one column past the row be written)
          const int64_t lo = std::max<int64_t>(0, -floor_div(kx - pw, sw));
          const int64_t hi = std::min<int64_t>(W, floor_div(OW - 1 + pw - kx, sw) + 1);
          for (int64_t iy = 0; iy < H; ++iy) {
            const int64_t oy = iy * sh - ph + ky;
            if (oy < 0 || oy >= OH) continue;
            float* orow = out + oy * OW - pw + kx;
            const float* crow = c + iy * W;
            for (int64_t ix = lo; ix < hi; ++ix) orow[ix * sw] += crow[ix];
          }
        }
      }
    }
  });
  return y;
}

// `t` itself when dense in its own memory format (NCHW or channels-last), else an NCHW copy.
at::Tensor dense(const at::Tensor& t) {
  return t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast) ? t : t.contiguous();
}

// f(n0, n1, scratch) over ranges of the N images in parallel, each with its own scratch of
// `floats` floats (convt_k4s2.cpp's per-image kernels).
template <typename F>
void over_images(int64_t N, int64_t floats, const F& f) {
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<float> scratch(floats);
    f(n0, n1, scratch.data());
  });
}

// The 4x4 transposed convolution at stride 2, padding 1 of convt_k4s2.cpp: float32 on the CPU,
// AVX-512, x (N, C, H, W), w (C, K, 4, 4) with K a multiple of 32, C >= kK4s2MinIn and
// C K <= kK4s2MaxFilters. examples/bench_upconv (docs/benchmarks.md): 1.2-1.7x libtorch for the
// conv VAE's and the beta-VAE's layers (C K <= 4096) and DCGAN's 128 -> 64 (8192); about even
// at 256 -> 128 and down to 0.5x at 512 -> 256, where the repacked filters (64 C K bytes)
// outgrow the 1 MB L2 cache that every image's pass reads them from.
constexpr int64_t kK4s2MinIn = 16, kK4s2MaxFilters = 16384;

bool k4s2_fits(const at::Tensor& x, const at::Tensor& w, int64_t sh, int64_t sw, int64_t ph,
               int64_t pw) {
  return float_cpu(x) && float_cpu(w) && x.dim() == 4 && w.dim() == 4 && w.size(2) == 4 &&
         w.size(3) == 4 && sh == 2 && sw == 2 && ph == 1 && pw == 1 && w.size(0) == x.size(1) &&
         x.size(1) >= kK4s2MinIn && w.size(1) % zoo::kConvtK4s2Block == 0 &&
         x.size(1) * w.size(1) <= kK4s2MaxFilters && x.numel() > 0 &&
         zoo::convt_k4s2_available();
}

// convt_k4s2 of a 7x7 input (`transposed`) or conv_k4s2 of a 14x14 one, C a multiple of 16
// (x, w contiguous; b empty: no bias), by convt_k4s2.cpp's Winograd F(7, 2) variants.
at::Tensor wino7_k4s2(bool transposed, const at::Tensor& x, const at::Tensor& w,
                      const at::Tensor& b, int64_t K, bool relu) {
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t size = transposed ? zoo::convt_k4s2_wino7_packed_size(C, K)
                                  : zoo::conv_k4s2_wino7_packed_size(C, K);
  at::Tensor packed = at::empty({size}, x.options());
  (transposed ? zoo::convt_k4s2_wino7_pack : zoo::conv_k4s2_wino7_pack)(
      w.data_ptr<float>(), C, K, packed.data_ptr<float>());
  const int64_t side = transposed ? 14 : 7;
  at::Tensor y = at::empty({N, K, side, side}, x.options());
  const float *xp = x.data_ptr<float>(), *pp = packed.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t scratch = transposed ? zoo::convt_k4s2_wino7_scratch_size(C)
                                     : zoo::conv_k4s2_wino7_scratch_size(C);
  const auto images = transposed ? zoo::convt_k4s2_wino7_images : zoo::conv_k4s2_wino7_images;
  over_images(N, scratch, [&](int64_t n0, int64_t n1, float* sc) {
    images(xp, pp, bp, yp, C, K, n0, n1, sc, relu);
  });
  return y;
}

// One of convt_k4s2.cpp's packed-filter 4x4 stride-2 kernels: `transposed` convt_k4s2 (w (C,
// K, 4, 4), y (N, K, 2H, 2W)), else conv_k4s2 (w (K, C, 4, 4), y (N, K, H/2, W/2)); b empty or
// undefined: no bias; `relu`: relu of the result.
at::Tensor packed_k4s2(bool transposed, const at::Tensor& x_in, const at::Tensor& w_in,
                       const at::Tensor& b_in, bool relu) {
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const at::Tensor b = b_in.defined() && b_in.numel() > 0 ? b_in.contiguous() : at::Tensor();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = w.size(transposed ? 1 : 0);
  if (C % 16 == 0 && (transposed ? H == 7 && W == 7 : H == 14 && W == 14))
    return wino7_k4s2(transposed, x, w, b, K, relu);
  at::Tensor packed = at::empty({zoo::convt_k4s2_packed_size(C, K)}, x.options());
  (transposed ? zoo::convt_k4s2_pack : zoo::conv_k4s2_pack)(w.data_ptr<float>(), C, K,
                                                            packed.data_ptr<float>());
  at::Tensor y = transposed ? at::empty({N, K, 2 * H, 2 * W}, x.options())
                            : at::empty({N, K, H / 2, W / 2}, x.options());
  const float *xp = x.data_ptr<float>(), *pp = packed.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const auto images = transposed ? zoo::convt_k4s2_images : zoo::conv_k4s2_images;
  over_images(N, zoo::convt_k4s2_scratch_size(C, H, W), [&](int64_t n0, int64_t n1, float* sc) {
    images(xp, pp, bp, yp, C, K, H, W, n0, n1, sc, relu);
  });
  return y;
}

// conv_transpose2d(x, w, b, stride 2, padding 1) by convt_k4s2.cpp (k4s2_fits holds; b empty or
// undefined: no bias).
at::Tensor convt_k4s2(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                      bool relu = false) {
  return packed_k4s2(true, x, w, b, relu);
}

// conv2d(x (N, 1, H, W), w (K, 1, 4, 4), b, stride 2, padding 1) of a single channel by
// convt_k4s2.cpp's conv1_k4s2_images: float32 on the CPU, AVX-512, H and W even, K a multiple
// of 4. The conv VAE's first layer, and its last layer's input gradient (the same operation):
// oneDNN's blocked output and input need a reorder each way there (docs/benchmarks.md).
bool conv1_k4s2_fits(const at::Tensor& x, const at::Tensor& w, int64_t sh, int64_t sw,
                     int64_t ph, int64_t pw) {
  return float_cpu(x) && float_cpu(w) && x.dim() == 4 && w.dim() == 4 && x.size(1) == 1 &&
         w.size(1) == 1 && w.size(2) == 4 && w.size(3) == 4 && w.size(0) % 4 == 0 &&
         w.size(0) > 0 && sh == 2 && sw == 2 && ph == 1 && pw == 1 && x.size(0) > 0 &&
         x.size(2) > 0 && x.size(3) > 0 && x.size(2) % 2 == 0 && x.size(3) % 2 == 0 &&
         zoo::convt_k4s2_available();
}

// (b empty or undefined: no bias)
at::Tensor conv1_k4s2(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in,
                      bool relu = false) {
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const at::Tensor b = b_in.defined() && b_in.numel() > 0 ? b_in.contiguous() : at::Tensor();
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), K = w.size(0);
  at::Tensor y = at::empty({N, K, H / 2, W / 2}, x.options());
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  over_images(N, zoo::conv1_k4s2_scratch_size(H, W), [&](int64_t n0, int64_t n1, float* sc) {
    zoo::conv1_k4s2_images(xp, wp, bp, yp, K, H, W, n0, n1, sc, relu);
  });
  return y;
}

// Whether conv_transpose2d(x, w, b, stride, padding) runs as convt_k4s2: an NCHW x (a
// channels-last one keeps oneDNN's channels-last kernels).
bool k4s2_convt_chosen(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t sh,
                       int64_t sw, int64_t ph, int64_t pw) {
  return k4s2_fits(x, w, sh, sw, ph, pw) && x.is_contiguous() &&
         (!b.defined() || (float_cpu(b) && b.dim() == 1 && b.size(0) == w.size(1)));
}

// Whether conv2d(x, w, b, stride, padding) with a gradient for x takes convt_k4s2 for that
// gradient: a 4x4 stride-2 convolution of an NCHW x with even sides (the transposed
// convolution of the output's gradient then has x's size).
bool k4s2_conv_chosen(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t sh,
                      int64_t sw, int64_t ph, int64_t pw) {
  if (x.dim() != 4 || w.dim() != 4 || x.size(2) % 2 != 0 || x.size(3) % 2 != 0) return false;
  // the gradient's transposed convolution: input channels K = w.size(0), output C = x.size(1)
  return float_cpu(x) && float_cpu(w) && w.size(1) == x.size(1) && w.size(0) >= kK4s2MinIn &&
         w.size(0) * w.size(1) <= kK4s2MaxFilters &&
         x.size(1) % zoo::kConvtK4s2Block == 0 && w.size(2) == 4 && w.size(3) == 4 && sh == 2 &&
         sw == 2 && ph == 1 && pw == 1 && x.is_contiguous() && bias_fits(b, w) &&
         zoo::convt_k4s2_available() && x.requires_grad() && c10::GradMode::is_enabled();
}

// Few channels on the output side of a transposed convolution, or on the input side of a
// convolution (its input gradient is such a transposed convolution): float32 on the CPU,
// 4-D, no groups, at most kFewChannels channels and at least kFewOther on the other side.
// Measured on DCGAN's and the conv VAE's layers (docs/benchmarks.md): with 1-3 channels the
// GEMM path is 3-6x oneDNN; with 32 (the VAE's t1) it is 2x slower.
constexpr int64_t kFewChannels = 4, kFewOther = 16;

// (`outputs`: the bias's length)
bool few_fits(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t few,
              int64_t other, int64_t outputs) {
  return float_cpu(x) && float_cpu(w) && x.dim() == 4 && w.dim() == 4 && few <= kFewChannels &&
         other >= kFewOther &&
         (!b.defined() || (float_cpu(b) && b.dim() == 1 && b.size(0) == outputs));
}

// The 4x4 stride-2 transposed convolution (padding 1) to few output channels, an image
// decoder's last layer, by convt_k4s2.cpp's convt_few_k4s2 kernels: float32 on the CPU,
// AVX-512, an NCHW x (N, C, H, W), w (C, K, 4, 4) with K <= kFewChannels. The forward and the
// filters' gradient (docs/benchmarks.md, the VAE section); libtorch's GEMM path for this layer
// ran its batched GEMM through MKL's generic code, and its backward reordered the input for
// oneDNN and summed the bias's gradient in oneDNN's reference code.
bool few_k4s2_fits(const at::Tensor& x, const at::Tensor& w, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw) {
  return float_cpu(x) && float_cpu(w) && x.dim() == 4 && w.dim() == 4 && x.is_contiguous() &&
         w.size(0) == x.size(1) && w.size(1) >= 1 && w.size(1) <= kFewChannels &&
         w.size(2) == 4 && w.size(3) == 4 && sh == 2 && sw == 2 && ph == 1 && pw == 1 &&
         x.numel() > 0 && zoo::convt_k4s2_available();
}

// (b empty or undefined: no bias)
at::Tensor convt_few_k4s2(const at::Tensor& x, const at::Tensor& w_in, const at::Tensor& b_in) {
  const at::Tensor w = w_in.contiguous();
  const at::Tensor b = b_in.defined() && b_in.numel() > 0 ? b_in.contiguous() : at::Tensor();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(1);
  at::Tensor y = at::empty({N, K, 2 * H, 2 * W}, x.options());
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  over_images(N, zoo::convt_few_k4s2_scratch_size(C, H, W), [&](int64_t n0, int64_t n1, float* sc) {
    zoo::convt_few_k4s2_images(xp, wp, bp, yp, C, K, H, W, n0, n1, sc);
  });
  return y;
}

// The filters' gradient (C, K, 4, 4) of convt_few_k4s2 and, with `bias`, the bias's (K), from
// its input x and its output's gradient g, and with `x_sums` the sums of x's channels (C); x
// counts as zero where a defined `x_mask` is not above zero. Per thread over its images, then
// summed.
std::tuple<at::Tensor, at::Tensor, at::Tensor> convt_few_k4s2_wgrad(
    const at::Tensor& x, const at::Tensor& g_in, int64_t K, bool bias,
    const at::Tensor& x_mask = at::Tensor(), bool x_sums = false) {
  const at::Tensor g = g_in.contiguous();
  const at::Tensor m = x_mask.defined() ? x_mask.contiguous() : at::Tensor();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(N, at::get_num_threads()));
  at::Tensor gw = at::zeros({parts, C, K, 4, 4}, x.options()), gb = at::zeros({parts, K}, x.options());
  at::Tensor xs = at::zeros({parts, C}, x.options());
  const float *xp = x.data_ptr<float>(), *gp = g.data_ptr<float>();
  const float* mp = m.defined() ? m.data_ptr<float>() : nullptr;
  float *gwp = gw.data_ptr<float>(), *gbp = gb.data_ptr<float>(), *xsp = xs.data_ptr<float>();
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> scratch(zoo::convt_few_k4s2_wgrad_scratch_size(C, K, H, W));
    for (int64_t part = p0; part < p1; ++part)
      zoo::convt_few_k4s2_wgrad_images(xp, gp, gwp + part * C * K * 16, gbp + part * K, C, K, H, W,
                                       N * part / parts, N * (part + 1) / parts, scratch.data(),
                                       mp, x_sums ? xsp + part * C : nullptr);
  });
  return {gw.sum(0), bias ? gb.sum(0) : at::Tensor(), x_sums ? xs.sum(0) : at::Tensor()};
}

// The 4x4 stride-2 convolution (padding 1) by convt_k4s2.cpp's conv_k4s2 kernels, forward and
// filter gradient: float32 on the CPU, AVX-512, an NCHW x (N, C, H, W) with H and W even,
// w (K, C, 4, 4) with C and K multiples of 32 and C K <= kK4s2MaxFilters (the repacked filters
// stay in the L2 cache, as for convt_k4s2). The conv VAE's 32 -> 64 layer, and the input and
// filter gradients of its decoder's 64 -> 32 transposed layer; oneDNN ran them at ~60 GFLOP/s
// plus a reorder of each NCHW operand to its blocked layout and back (docs/benchmarks.md).
bool conv_k4s2_fits(const at::Tensor& x, const at::Tensor& w, int64_t sh, int64_t sw, int64_t ph,
                    int64_t pw) {
  return float_cpu(x) && float_cpu(w) && x.dim() == 4 && w.dim() == 4 && x.is_contiguous() &&
         w.size(1) == x.size(1) && x.size(1) % 32 == 0 && w.size(0) % 32 == 0 &&
         w.size(2) == 4 && w.size(3) == 4 && sh == 2 && sw == 2 && ph == 1 && pw == 1 &&
         x.size(2) % 2 == 0 && x.size(3) % 2 == 0 && x.size(1) * w.size(0) <= kK4s2MaxFilters &&
         x.numel() > 0 && zoo::convt_k4s2_available();
}

// conv2d(x, w, b, stride 2, padding 1) by conv_k4s2 (conv_k4s2_fits holds; b empty or
// undefined: no bias); with `relu`, relu of it.
at::Tensor conv_k4s2(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                     bool relu = false) {
  return packed_k4s2(false, x, w, b, relu);
}

// The filters' gradient (K, C, 4, 4) of conv_k4s2 from its input x and its output's gradient
// g (N, K, H/2, W/2), with the sums of g's channels (`g_sums`: the bias's gradient) and of
// x's (`x_sums`) where asked (else undefined). Per thread over its images, then summed.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_k4s2_wgrad(const at::Tensor& x,
                                                               const at::Tensor& g_in,
                                                               bool g_sums, bool x_sums) {
  const at::Tensor g = g_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = g.size(1);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(N, at::get_num_threads()));
  at::Tensor acc = at::zeros({parts, 4, 4, K, C}, x.options());
  at::Tensor gs = at::zeros({parts, K}, x.options()), xs = at::zeros({parts, C}, x.options());
  const float *xp = x.data_ptr<float>(), *gp = g.data_ptr<float>();
  float *ap = acc.data_ptr<float>(), *gsp = gs.data_ptr<float>(), *xsp = xs.data_ptr<float>();
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> scratch(zoo::conv_k4s2_wgrad_scratch_size(C, K, H, W));
    for (int64_t part = p0; part < p1; ++part)
      zoo::conv_k4s2_wgrad_images(xp, gp, ap + part * 16 * K * C, g_sums ? gsp + part * K : nullptr,
                                  x_sums ? xsp + part * C : nullptr, C, K, H, W,
                                  N * part / parts, N * (part + 1) / parts, scratch.data());
  });
  return {acc.sum(0).permute({2, 3, 0, 1}).contiguous(), g_sums ? gs.sum(0) : at::Tensor(),
          x_sums ? xs.sum(0) : at::Tensor()};
}

// What FewConvT's and FewConv's backward read: the operands, stride and padding, whether
// there is a bias (an empty one: custom functions take no undefined inputs), and the output y
// of a layer with its ReLU fused (else undefined).
void save_conv(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
               const at::Tensor& b, std::vector<int64_t> stride_padding, const at::Tensor& y) {
  if (y.defined()) {
    ctx->save_for_backward({x, w, y});
  } else {
    ctx->save_for_backward({x, w});
  }
  ctx->saved_data["s"] = std::move(stride_padding);
  ctx->saved_data["bias"] = b.numel() > 0;
}

// The gradient before a fused ReLU with output y (saved third), or g when there is none.
at::Tensor before_relu(const std::vector<at::Tensor>& saved, const at::Tensor& g) {
  return saved.size() > 2 ? at::threshold_backward(g, saved[2], 0) : g;
}

// libtorch's convolution backward of a saved FewConvT / FewConv for the input (`need_x`), the
// filters and the bias, as far as autograd needs them.
std::tuple<at::Tensor, at::Tensor, at::Tensor> saved_conv_backward(
    torch::autograd::AutogradContext* ctx, const at::Tensor& g, bool transposed, bool need_x) {
  const auto saved = ctx->get_saved_variables();
  const at::Tensor &x = saved[0], &w = saved[1];
  const auto s = ctx->saved_data["s"].toIntVector();
  const bool need_b = ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2);
  const int64_t outputs = w.size(transposed ? 1 : 0);
  return at::convolution_backward(
      g, x, w, need_b ? at::OptionalIntArrayRef({outputs}) : c10::nullopt, {s[0], s[1]},
      {s[2], s[3]}, {1, 1}, transposed, {0, 0}, 1, {need_x, ctx->needs_input_grad(1), need_b});
}

// conv_transpose2d through gemm_convt (few output channels), convt_k4s2 (4x4 stride 2) or
// convt_few_k4s2 (both); gradients from libtorch's convolution backward (which autograd can
// differentiate again), except, when the backward builds no graph: all of a convt_k4s2 layer's
// with 32k channels each way (conv_k4s2 and its filter gradient), the input's of a layer to one
// channel at 4x4 stride 2 (conv1_k4s2) and the filters' and bias's of convt_few_k4s2's layers.
struct FewConvT : public torch::autograd::Function<FewConvT> {
  // (`relu`: relu(conv_transpose2d(...)), the ReLU fused into convt_k4s2's stores)
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, bool relu) {
    at::Tensor y = convt_forward(x, w, b.numel() > 0 ? b : at::Tensor(), sh, sw, ph, pw, relu);
    save_conv(ctx, x, w, b, {sh, sw, ph, pw}, relu ? y : at::Tensor());
    return y;
  }

  static at::Tensor convt_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                                  int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool relu) {
    if (k4s2_fits(x, w, sh, sw, ph, pw)) return convt_k4s2(x, w, b, relu);
    at::Tensor y = convt_plain(x, w, b, sh, sw, ph, pw);
    return relu ? y.relu_() : y;
  }

  static at::Tensor convt_plain(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    if (few_k4s2_fits(x, w, sh, sw, ph, pw)) return convt_few_k4s2(x, w, b);
    const int64_t OH = (x.size(2) - 1) * sh - 2 * ph + w.size(2);
    const int64_t OW = (x.size(3) - 1) * sw - 2 * pw + w.size(3);
    at::Tensor y = gemm_convt(x, w, sh, sw, ph, pw, OH, OW);
    if (b.defined()) y.add_(b.view({1, -1, 1, 1}));
    return y;
  }

  // The input's gradient of a layer to one channel at 4x4 stride 2 is conv1_k4s2 of the
  // output's gradient (unless the backward builds a graph); the rest is libtorch's.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor g = dense(before_relu(saved, grads[0]));
    const auto s = ctx->saved_data["s"].toIntVector();
    const bool graph = c10::GradMode::is_enabled();
    const bool fast_x = ctx->needs_input_grad(0) && !graph &&
                        conv1_k4s2_fits(g, saved[1], s[0], s[1], s[2], s[3]);
    const bool need_b = ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2);
    // A 4x4 stride-2 layer with 32k channels each way: its input gradient is conv_k4s2 of g
    // (the filters read as conv2d's), its filters' the same kernel's filter gradient with g as
    // the image and x as the output's gradient, its bias's the sums of g that come with it.
    // (an NCHW g: a channels-last one takes libtorch's backward)
    if (!graph && conv_k4s2_fits(g, saved[1], s[0], s[1], s[2], s[3])) {
      const at::Tensor gx = ctx->needs_input_grad(0) ? conv_k4s2(g, saved[1], at::Tensor()) : at::Tensor();
      at::Tensor gw, gb;
      if (ctx->needs_input_grad(1) || need_b) {
        auto r = conv_k4s2_wgrad(g, saved[0].contiguous(), false, need_b);
        gw = ctx->needs_input_grad(1) ? std::get<0>(r) : at::Tensor();
        gb = std::get<2>(r);
      }
      return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const bool fast_w = (ctx->needs_input_grad(1) || need_b) && !graph &&
                        few_k4s2_fits(saved[0], saved[1], s[0], s[1], s[2], s[3]);
    if (fast_w) {
      auto [gw, gb, unused] = convt_few_k4s2_wgrad(saved[0], g, saved[1].size(1), need_b);
      at::Tensor gx;
      if (fast_x) {
        gx = conv1_k4s2(g, saved[1], at::Tensor());
      } else if (ctx->needs_input_grad(0)) {
        gx = std::get<0>(at::convolution_backward(g, saved[0], saved[1], c10::nullopt, {2, 2},
                                                  {1, 1}, {1, 1}, true, {0, 0}, 1,
                                                  {true, false, false}));
      }
      return {gx, ctx->needs_input_grad(1) ? gw : at::Tensor(), gb, at::Tensor(), at::Tensor(),
              at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto r = saved_conv_backward(ctx, g, true, ctx->needs_input_grad(0) && !fast_x);
    const at::Tensor gx = fast_x ? conv1_k4s2(g, saved[1], at::Tensor()) : std::get<0>(r);
    return {gx, std::get<1>(r), std::get<2>(r), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

// conv2d by libtorch (by conv1_k4s2 for one input channel at 4x4 stride 2, conv_k4s2 for 32k
// channels each way), with the input's gradient through gemm_convt when the input has few
// channels, or convt_k4s2 / convt_few_k4s2 for a 4x4 stride-2 convolution (the filters' and the
// bias's gradient from libtorch's convolution backward, or conv_k4s2's own, or
// convt_few_k4s2's for conv1_k4s2's layers). A backward that builds a graph runs libtorch's
// whole backward.
struct FewConv : public torch::autograd::Function<FewConv> {
  // The input's gradient, the transposed convolution of the output's gradient g at x's size:
  // convt_k4s2, convt_few_k4s2 (4x4 stride 2 to few channels, x's sides even) or gemm_convt.
  static at::Tensor input_grad(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w,
                               const std::vector<int64_t>& s) {
    if (k4s2_fits(g, w, s[0], s[1], s[2], s[3])) return convt_k4s2(g, w, at::Tensor());
    if (few_k4s2_fits(g, w, s[0], s[1], s[2], s[3]) && 2 * g.size(2) == x.size(2) &&
        2 * g.size(3) == x.size(3))
      return convt_few_k4s2(g, w, at::Tensor());
    return gemm_convt(g, w, s[0], s[1], s[2], s[3], x.size(2), x.size(3));
  }

  // (`relu`: relu(conv2d(...)), fused into conv1_k4s2's stores)
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, bool relu) {
    at::Tensor y;
    if (conv1_k4s2_fits(x, w, sh, sw, ph, pw)) {
      y = conv1_k4s2(x, w, b, relu);
    } else if (conv_k4s2_fits(x, w, sh, sw, ph, pw)) {
      y = conv_k4s2(x, w, b, relu);
    } else {
      y = at::conv2d(x, w, b.numel() > 0 ? c10::optional<at::Tensor>(b) : c10::nullopt, {sh, sw},
                     {ph, pw});
      if (relu) y.relu_();
    }
    save_conv(ctx, x, w, b, {sh, sw, ph, pw}, relu ? y : at::Tensor());
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto s = ctx->saved_data["s"].toIntVector();
    const bool graph = c10::GradMode::is_enabled();
    const bool fast_x = ctx->needs_input_grad(0) && !graph;
    // The filters of a single-channel 4x4 stride-2 convolution: the few-output transposed
    // kernel's filter gradient with the roles swapped (the output's gradient as its input, the
    // image as its output's gradient): the same sums, in conv2d's (K, 1, 4, 4) layout; the
    // bias's are the sums of the output's gradient, and a fused ReLU masks it as it is read.
    const bool need_b = ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2);
    const at::Tensor g0 = dense(grads[0]);
    if (!graph && (ctx->needs_input_grad(1) || need_b) &&
        conv1_k4s2_fits(saved[0], saved[1], s[0], s[1], s[2], s[3]) &&
        few_k4s2_fits(g0, saved[1], s[0], s[1], s[2], s[3])) {
      const at::Tensor y = saved.size() > 2 ? saved[2] : at::Tensor();
      auto [gw, unused, gb] = convt_few_k4s2_wgrad(g0, saved[0].contiguous(), 1, false, y, need_b);
      const at::Tensor gx =
          fast_x ? input_grad(before_relu(saved, g0), saved[0], saved[1], s) : at::Tensor();
      return {gx, ctx->needs_input_grad(1) ? gw : at::Tensor(), gb, at::Tensor(), at::Tensor(),
              at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const at::Tensor g = dense(before_relu(saved, g0));
    // The filters (and bias) of conv_k4s2's layers: its filter gradient kernel.
    if (!graph && conv_k4s2_fits(saved[0], saved[1], s[0], s[1], s[2], s[3])) {
      at::Tensor gw, gb;
      if (ctx->needs_input_grad(1) || need_b) {
        auto r = conv_k4s2_wgrad(saved[0], g, need_b, false);
        gw = ctx->needs_input_grad(1) ? std::get<0>(r) : at::Tensor();
        gb = std::get<1>(r);
      }
      const at::Tensor gx = fast_x ? input_grad(g, saved[0], saved[1], s) : at::Tensor();
      return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto r = saved_conv_backward(ctx, g, false, ctx->needs_input_grad(0) && !fast_x);
    const at::Tensor gx = fast_x ? input_grad(g, saved[0], saved[1], s) : std::get<0>(r);
    return {gx, std::get<1>(r), std::get<2>(r), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

// Whether conv_transpose2d(x, w, b, stride, padding) runs as gemm_convt here.
bool convt_chosen(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (w.dim() != 4) return false;
  return few_fits(x, w, b, w.size(1), w.size(0), w.size(1)) && w.size(0) == x.size(1);
}

// Whether conv2d(x, w, b, ...) with a gradient for x takes gemm_convt for that gradient.
bool few_conv_chosen(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (x.dim() != 4 || w.dim() != 4) return false;
  return few_fits(x, w, b, x.size(1), w.size(0), w.size(0)) && w.size(1) == x.size(1) &&
         x.requires_grad() && c10::GradMode::is_enabled();
}

// (`relu`: relu of the result, fused into the layer where zoo's kernels run it)
at::Tensor conv_transpose2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool relu) {
  const bool k4s2 = k4s2_convt_chosen(x, w, b, sh, sw, ph, pw);
  if (!k4s2 && (!convt_chosen(x, w, b) || sh < 1 || sw < 1 || ph < 0 || pw < 0)) {
    at::Tensor y = at::conv_transpose2d(
        x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt, {sh, sw}, {ph, pw});
    return relu ? at::relu(y) : y;
  }
  if (!needs_grad(x, w, b)) return FewConvT::convt_forward(x, w, b, sh, sw, ph, pw, relu);
  return FewConvT::apply(x, w, b.defined() ? b : at::empty({0}, x.options()), sh, sw, ph, pw,
                         relu);
}


// (`relu`: relu of the result, fused into the layer where zoo's kernels run it)
at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t sh,
                  int64_t sw, int64_t ph, int64_t pw, bool relu) {
  if (!wino_chosen(x, w, b, sh, sw, ph, pw)) {
    const bool one = conv1_k4s2_fits(x, w, sh, sw, ph, pw) && bias_fits(b, w);
    if (one && !needs_grad(x, w, b)) return conv1_k4s2(x, w, b, relu);
    const bool strided = conv_k4s2_fits(x, w, sh, sw, ph, pw) && bias_fits(b, w);
    if (strided && !needs_grad(x, w, b)) return conv_k4s2(x, w, b, relu);
    if ((few_conv_chosen(x, w, b) && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0) ||
        k4s2_conv_chosen(x, w, b, sh, sw, ph, pw) || one || strided)
      return FewConv::apply(x, w, b.defined() ? b : at::empty({0}, x.options()), sh, sw, ph, pw,
                            relu);
    at::Tensor y = at::conv2d(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt,
                              {sh, sw}, {ph, pw});
    return relu ? at::relu(y) : y;
  }
  if (relu) return at::relu(conv2d(x, w, b, sh, sw, ph, pw, false));
  if (!needs_grad(x, w, b)) return wino_conv(x, w, b, ph, true);
  {
    // training changes the weights: let go of the filters sampling transformed
    std::lock_guard<std::mutex> lock(cache_mu);
    int64_t bytes = 0;
    sweep_cache(nullptr, &bytes);
  }
  // (custom functions take no undefined inputs: no bias is an empty one)
  return WinoConv::apply(x, w, b.defined() ? b : at::empty({0}, x.options()), ph);
}

// conv1d with stride 1, plus `add` (the output's shape) if defined. Winograd takes dilated
// kernel-3 filters with "same" padding (padding = dilation: WaveGlow's WN layers) when nothing
// needs a gradient (vocoding), float32 on the CPU, at least 16 channels each way and kMinTiles
// tiles; it adds `add` as it writes the output (WN: the layer's conditioning).
at::Tensor conv1d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t pad,
                  int64_t dilation, const at::Tensor& add) {
  auto plus = [&](at::Tensor y) { return add.defined() ? y + add : y; };
  // (everything the fast paths share: no gradient to record, float32 on the CPU, 16+ channels)
  const bool plain = !needs_grad(x, w, b) &&
                     !(add.defined() && add.requires_grad() && c10::GradMode::is_enabled()) &&
                     float_cpu(x) && float_cpu(w) && x.dim() == 3 && w.dim() == 3 &&
                     w.size(1) == x.size(1) && x.size(1) >= 16 && w.size(0) >= 16 &&
                     bias_fits(b, w);
  const bool fits = plain && w.size(2) == 3 && pad == dilation && dilation >= 1;
  const bool add_fits = !add.defined() ||
                        (float_cpu(add) && add.dim() == 3 && x.dim() == 3 && w.dim() == 3 &&
                         add.size(0) == x.size(0) && add.size(1) == w.size(0) &&
                         add.size(2) == x.size(2) && add.stride(2) == 1);
  if (fits && add_fits && x.size(0) * x.size(2) / 4 >= kMinTiles)
    return wino_conv1d(x, w, b, dilation, add);
  // A 1x1 convolution of one sequence is one GEMM, W (K, C) x (C, T), run as oneDNN's matmul
  // like the Winograd GEMMs (docs/benchmarks.md: a one-off before/after of the vocoder).
  if (plain && w.size(2) == 1 && pad == 0 && x.size(0) == 1 && x.size(2) >= 64) {
    const int64_t K = w.size(0), T = x.size(2);
    at::Tensor y = at::empty({1, K, T}, x.options());
    matmul_into(w.reshape({K, w.size(1)}).contiguous(), x[0].contiguous(), y[0]);
    if (b.defined()) y.add_(b.view({1, K, 1}));
    return plus(y);
  }
  return plus(at::conv1d(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt, {1},
                         {pad}, {dilation}));
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
    // The fused kernel writes the parameters without bumping their version counters (unlike
    // an in-place op); the Winograd filter cache keys on them, so a sample or an evaluation
    // during training would otherwise reuse filters transformed before the update.
    for (auto& t : p) t.unsafeGetTensorImpl()->bump_version();
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}

// 1 if zoo_linear(x, w, b, transposed) runs as oneDNN's matmul (DnnlLinear), else 0.
int zoo_linear_is_dnnl(void* x, void* w, void* b, int transposed) {
  try {
    const c10::optional<at::Tensor> bias =
        b ? c10::optional<at::Tensor>(*static_cast<at::Tensor*>(b)) : c10::nullopt;
    return dnnl_linear_chosen(*static_cast<at::Tensor*>(x), *static_cast<at::Tensor*>(w), bias,
                              transposed != 0)
               ? 1
               : 0;
  } catch (const std::exception&) {
    return 0;
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

// Returns a new at::Tensor or null with the message in `err`; `b` may be null. With `relu`
// nonzero, relu of the convolution, fused where zoo's kernels run the layer.
void* zoo_conv2d(void* x, void* w, void* b, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                 int relu, char* err, size_t err_len) {
  try {
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    return new at::Tensor(conv2d(*static_cast<at::Tensor*>(x), *static_cast<at::Tensor*>(w), bias,
                                 sh, sw, ph, pw, relu != 0));
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return nullptr;
  }
}

// conv_transpose2d (at::conv_transpose2d's semantics, no output padding, groups or dilation);
// relu of it when `relu` is nonzero, fused where zoo's kernels run the layer.
void* zoo_conv_transpose2d(void* x, void* w, void* b, int64_t sh, int64_t sw, int64_t ph,
                           int64_t pw, int relu, char* err, size_t err_len) {
  try {
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    return new at::Tensor(conv_transpose2d(*static_cast<at::Tensor*>(x),
                                           *static_cast<at::Tensor*>(w), bias, sh, sw, ph, pw,
                                           relu != 0));
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return nullptr;
  }
}

// 1 if zoo_conv_transpose2d(x, w, b, ...) runs as GEMM + col2im, 2 if zoo_conv2d(x, w, b, ...)
// takes that path for its input's gradient, else 0.
int zoo_few_channel_path(void* x, void* w, void* b, int transposed) {
  try {
    const at::Tensor &xt = *static_cast<at::Tensor*>(x), &wt = *static_cast<at::Tensor*>(w);
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    if (transposed) return convt_chosen(xt, wt, bias) ? 1 : 0;
    return few_conv_chosen(xt, wt, bias) ? 2 : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// 1 if zoo_conv_transpose2d(x, w, b, stride, padding) runs as convt_k4s2, 2 if zoo_conv2d(x, w,
// b, ...) takes it for its input's gradient (in the current grad mode), else 0.
int zoo_k4s2_path(void* x, void* w, void* b, int transposed, int64_t sh, int64_t sw, int64_t ph,
                  int64_t pw) {
  try {
    const at::Tensor &xt = *static_cast<at::Tensor*>(x), &wt = *static_cast<at::Tensor*>(w);
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    if (transposed) return k4s2_convt_chosen(xt, wt, bias, sh, sw, ph, pw) ? 1 : 0;
    return k4s2_conv_chosen(xt, wt, bias, sh, sw, ph, pw) ? 2 : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// 1 if zoo_conv2d(x, w, b, stride, padding) runs its forward and filter gradient as conv_k4s2
// (so does a 4x4 stride-2 transposed convolution's backward whose output's gradient and
// filters are x and w here), else 0.
int zoo_conv_k4s2_path(void* x, void* w, void* b, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  try {
    const at::Tensor &xt = *static_cast<at::Tensor*>(x), &wt = *static_cast<at::Tensor*>(w);
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    return conv_k4s2_fits(xt, wt, sh, sw, ph, pw) && bias_fits(bias, wt) &&
                   !wino_chosen(xt, wt, bias, sh, sw, ph, pw)
               ? 1
               : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// 1 if zoo_conv2d(x, w, b, ...) would run as Winograd (`b` may be null), else 0.
int zoo_conv2d_winograd(void* x, void* w, void* b, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  try {
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    return wino_chosen(*static_cast<at::Tensor*>(x), *static_cast<at::Tensor*>(w), bias, sh, sw, ph,
                       pw)
               ? 1
               : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// Returns a new at::Tensor or null with the message in `err`; `b` and `add` may be null.
void* zoo_conv1d(void* x, void* w, void* b, int64_t pad, int64_t dilation, void* add, char* err,
                 size_t err_len) {
  try {
    const at::Tensor bias = b ? *static_cast<at::Tensor*>(b) : at::Tensor();
    const at::Tensor extra = add ? *static_cast<at::Tensor*>(add) : at::Tensor();
    return new at::Tensor(conv1d(*static_cast<at::Tensor*>(x), *static_cast<at::Tensor*>(w), bias,
                                 pad, dilation, extra));
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return nullptr;
  }
}

// Whether zoo_linear has its own kernel on this CPU.
int zoo_gemv_available() { return zoo::gemv_available() ? 1 : 0; }

// `x` copied into NCHW or channels-last order; the gradient goes back in x's own order, so the
// layers before the copy see the layout they wrote (libtorch's contiguous() passes the gradient
// on as it comes, and its pointwise backward kernels run several times slower on mixed layouts).
struct ToLayout : public torch::autograd::Function<ToLayout> {
  static at::MemoryFormat format(bool channels_last) {
    return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            bool channels_last) {
    ctx->saved_data["from_cl"] = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
    return x.contiguous(format(channels_last));  // (called when x is not in that order: a copy)
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {grads[0].contiguous(format(ctx->saved_data["from_cl"].toBool())), at::Tensor()};
  }
};

// Returns a new at::Tensor: `x` in channels-last (`channels_last` nonzero) or NCHW order, the
// same tensor when it already is; null with the message in `err`.
void* zoo_to_layout(void* x, int channels_last, char* err, size_t err_len) {
  try {
    const at::Tensor& t = *static_cast<at::Tensor*>(x);
    if (t.is_contiguous(ToLayout::format(channels_last != 0))) return new at::Tensor(t);
    if (!t.requires_grad() || !c10::GradMode::is_enabled())
      return new at::Tensor(t.contiguous(ToLayout::format(channels_last != 0)));
    return new at::Tensor(ToLayout::apply(t, channels_last != 0));
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return nullptr;
  }
}

// Drops the gradient of variable `t` (PyTorch's `zero_grad(set_to_none=True)`): the next backward
// stores its gradient as is instead of adding it to a zeroed buffer.
void zoo_clear_grad(void* t) { static_cast<at::Tensor*>(t)->mutable_grad().reset(); }

// glibc's malloc: blocks up to `mmap_threshold` bytes come from the heap, and up to
// `trim_threshold` bytes of free heap top stay mapped. 1: applied, 0: not glibc or refused.
int zoo_tune_malloc(long mmap_threshold, long trim_threshold) {
#ifdef __GLIBC__
  return mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold)) == 1 &&
                 mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_threshold)) == 1
             ? 1
             : 0;
#else
  (void)mmap_threshold;
  (void)trim_threshold;
  return 0;
#endif
}

}  // extern "C"
