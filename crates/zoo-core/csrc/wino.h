// Winograd F(4x4, r x r) transforms for r x r stride-1 convolutions (cross-correlation, as
// torch's conv2d), r = 3 or 2: the parts around the GEMMs that ops.cpp runs through libtorch.
// See wino.cpp.
#pragma once

#include <cstdint>

namespace zoo::wino {

// Output pixels per tile side.
constexpr int64_t kOut = 4;
// Transformed values per tile side (4 + r - 1), and per tile.
constexpr int64_t alpha(int r) { return kOut + r - 1; }
constexpr int64_t elems(int r) { return alpha(r) * alpha(r); }

// Filters k in [k0, k1) of w (K, C, r, r) -> u[e * K * C + k * C + c], e = a i + j: G g G^T.
void weight_transform(int r, const float* w, int64_t K, int64_t C, int64_t k0, int64_t k1, float* u);

// One input plane x (H, W), zero-padded by `pad` on every side, cut into th x tw tiles of a x a
// that step by 4 -> v[e * v_stride + ty * tw + tx]: B^T d B. `scratch` holds
// scratch_size(r, th, tw) floats.
void input_plane(int r, const float* x, int64_t H, int64_t W, int64_t pad, int64_t th,
                 int64_t tw, float* v, int64_t v_stride, float* scratch);
inline int64_t scratch_size(int r, int64_t th, int64_t tw) {
  return (th * kOut + r - 1) * (tw * kOut + r - 1);
}

// The products m[e * m_stride + ty * tw + tx] of one output plane -> y (Ho, Wo): A^T m A + bias,
// the tiles on the right and bottom edges cut to the plane.
void output_plane(int r, const float* m, int64_t m_stride, int64_t th, int64_t tw, float bias,
                  float* y, int64_t Ho, int64_t Wo);

// The gradient of one output plane g (Ho, Wo) on the same tiles -> v[e * v_stride + t]:
// A g A^T, the adjoint of output_plane.
void grad_plane(int r, const float* g, int64_t Ho, int64_t Wo, int64_t th, int64_t tw, float* v,
                int64_t v_stride);

// Filters k in [k0, k1) of the filters' gradient from its Winograd-domain form m (a^2, K, C)
// -> dw (K, C, r, r): G^T m G, the adjoint of weight_transform.
void weight_grad(int r, const float* m, int64_t K, int64_t C, int64_t k0, int64_t k1, float* dw);

}  // namespace zoo::wino
