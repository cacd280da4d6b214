// Winograd F(4x4, 3x3) transforms for 3x3 stride-1 convolutions (cross-correlation, as torch's
// conv2d): the parts around the GEMMs that ops.cpp runs through libtorch. See wino.cpp.
#pragma once

#include <cstdint>

namespace zoo::wino {

// Output pixels per tile side; transformed values per tile side (4 + 3 - 1) and per tile.
constexpr int64_t kOut = 4;
constexpr int64_t kAlpha = 6;
constexpr int64_t kElems = kAlpha * kAlpha;

// Filters k in [k0, k1) of w (K, C, 3, 3) -> u[e * K * C + k * C + c], e = 6 i + j: G g G^T.
void weight_transform(const float* w, int64_t K, int64_t C, int64_t k0, int64_t k1, float* u);

// One channel of the input, x[n * x_stride + y * W + x] for the N images (H, W), zero-padded by
// `pad` on every side, cut into th x tw tiles of 6 x 6 that step by 4 -> v[e * v_stride + j],
// tile j = (n * th + ty) * tw + tx: B^T d B. `scratch` holds scratch_size(N, th, tw) floats.
void input_channel(const float* x, int64_t x_stride, int64_t N, int64_t H, int64_t W, int64_t pad,
                   int64_t th, int64_t tw, float* v, float* scratch, int64_t v_stride);
inline int64_t scratch_size(int64_t N, int64_t th, int64_t tw) {
  return N * (th * kOut + 2) * (tw * kOut + 2);
}

// The products m[e * m_stride + j] of one output channel -> y[n * y_stride + ...] (Ho, Wo) for
// the N images: A^T m A + bias, the tiles on the right and bottom edges cut to the plane.
void output_channel(const float* m, int64_t m_stride, int64_t N, int64_t th, int64_t tw,
                    float bias, float* y, int64_t y_stride, int64_t Ho, int64_t Wo);

// The gradient of one output channel g[n * g_stride + ...] (Ho, Wo) on the same tiles
// -> v[e * v_stride + j]: A g A^T, the adjoint of output_channel.
void grad_channel(const float* g, int64_t g_stride, int64_t N, int64_t Ho, int64_t Wo, int64_t th,
                  int64_t tw, float* v, int64_t v_stride);

// Filters k in [k0, k1) of the filters' gradient from its Winograd-domain form m (36, K, C)
// -> dw (K, C, 3, 3): G^T m G, the adjoint of weight_transform.
void weight_grad(const float* m, int64_t K, int64_t C, int64_t k0, int64_t k1, float* dw);

// 1-D, F(4, 3), for a kernel-3 convolution with dilation d and padding d ("same" length T). The
// dilated convolution is an ordinary one on each residue's subsequence (t mod d): a tile is 4
// outputs d apart at t0 + i d, from the 6 inputs at t0 + (i - 1) d, in sequence n.
struct Tile1d {
  int64_t n, t0;
};
// Filters k in [k0, k1) of w (K, C, 3) -> u[e * K * C + k * C + c], e < 6.
void weight_transform_1d(const float* w, int64_t K, int64_t C, int64_t k0, int64_t k1, float* u);
// One input channel x[n * x_stride + t] (sequences of T) -> v[e * v_stride + j] for the tiles.
void input_channel_1d(const float* x, int64_t x_stride, const Tile1d* tiles, int64_t total,
                      int64_t T, int64_t d, float* v, int64_t v_stride);
// One output channel's products m[e * m_stride + j] -> y[n * y_stride + t] + bias, plus
// add[n * add_stride + t] unless `add` is null.
void output_channel_1d(const float* m, int64_t m_stride, const Tile1d* tiles, int64_t total,
                       int64_t T, int64_t d, float bias, const float* add, int64_t add_stride,
                       float* y, int64_t y_stride);

}  // namespace zoo::wino
