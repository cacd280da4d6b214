// Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016) for the 3x3 stride-1 convolutions of UNets and VAEs, and its 1-D form F(4, 3) for the
// dilated kernel-3 convolutions of WaveGlow's WN layers (inference).
//
// A 3x3 convolution computes each 4x4 block of output from a 6x6 block of input with 144
// multiplies per (input, output) channel pair; in the Winograd domain it is 36 elementwise
// products, so the GEMMs over channels shrink 4x. The price is transforms that are linear in the
// data (filters: G g G^T, input tiles: B^T d B, products: A^T m A), done here; ops.cpp runs the
// 36 GEMMs (one per transformed position) as one batched matmul. Training also needs the
// adjoints: A q A^T for the output's gradient and G^T m G for the filters'.
//
// tools/wino_transforms.py derives B^T, G and A^T exactly (Toom-Cook on the points 0, 1, -1,
// 2, -2 and infinity) and checks them. Every transform works on L = 16 tiles (or filters) at
// once, the lanes of local arrays, so the arithmetic vectorises; the exported functions are
// compiled for AVX-512, AVX2 and plain x86-64, chosen at load time (GCC's target_clones).
#include "wino.h"

#include <algorithm>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ZOO_WINO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ZOO_WINO_CLONES
#endif
#define ZOO_INLINE inline __attribute__((always_inline))

namespace zoo::wino {

namespace {

constexpr int L = 16;

// out = M in over L lanes, for a constant matrix M (R x C): rows of `in` are DS floats apart,
// rows of `out` RS apart. Once inlined the coefficients are constants, so zeros and ones cost
// nothing. `Transposed`: out = M^T in (M is C x R then).
template <int R, int C, int DS, int RS, bool Transposed = false, class Mat>
ZOO_INLINE void apply(const Mat& m, const float* in, float* out) {
  for (int l = 0; l < L; ++l) {
    float x[C];
    for (int k = 0; k < C; ++k) x[k] = in[k * DS + l];
    for (int i = 0; i < R; ++i) {
      float acc = 0.0f;
      for (int k = 0; k < C; ++k) {
        const float c = Transposed ? m[k][i] : m[i][k];
        if (c != 0.0f) acc += c * x[k];
      }
      out[i * RS + l] = acc;
    }
  }
}

// F(4x4, 3x3): the five points 0, 1, -1, 2, -2 and infinity (a = 6); the 2-D transforms apply
// each matrix along both axes, the 1-D ones once.
struct F43 {
  static constexpr int A = 6, M = 4, R = 3;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[6][3] = {{1.0f / 4, 0, 0},
                                    {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                    {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                    {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                    {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                    {0, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

ZOO_INLINE void weight_transform_t(const float* w, int64_t K, int64_t C, int64_t k0, int64_t k1,
                                   float* u) {
  constexpr int A = F43::A, R = F43::R;
  const int64_t stride = K * C;
  alignas(64) float g[R][R][L], t[A][R][L], r[A][A][L];
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t c0 = 0; c0 < C; c0 += L) {
      const int64_t n = std::min<int64_t>(L, C - c0);
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < R; ++j)
          for (int l = 0; l < L; ++l)
            g[i][j][l] = l < n ? w[((k * C) + c0 + l) * R * R + i * R + j] : 0.0f;
      for (int j = 0; j < R; ++j) apply<A, R, R * L, R * L>(F43::G, &g[0][j][0], &t[0][j][0]);
      for (int i = 0; i < A; ++i) apply<A, R, L, L>(F43::G, &t[i][0][0], &r[i][0][0]);
      for (int e = 0; e < A * A; ++e) {
        float* dst = u + e * stride + k * C + c0;
        const float* src = &r[e / A][e % A][0];
        for (int64_t l = 0; l < n; ++l) dst[l] = src[l];
      }
    }
  }
}

// Tile j of a channel across the batch: image j / P, tile row (j % P) / tw, column (j % P) % tw.
struct TileAt {
  int64_t n, ty, tx;
};
ZOO_INLINE TileAt tile_at(int64_t j, int64_t P, int64_t tw) {
  const int64_t t = j % P;
  return {j / P, t / tw, t % tw};
}

ZOO_INLINE void input_channel_t(const float* x, int64_t x_stride, int64_t N, int64_t H, int64_t W,
                                int64_t pad, int64_t th, int64_t tw, float* v, float* scratch,
                                int64_t v_stride) {
  constexpr int A = F43::A, M = F43::M;
  // Each image's plane, zero-padded to the tile grid, so that every patch reads without checks.
  const int64_t PH = th * M + A - M, PW = tw * M + A - M;
  for (int64_t n = 0; n < N; ++n) {
    const float* plane = x + n * x_stride;
    for (int64_t yy = 0; yy < PH; ++yy) {
      float* dst = scratch + (n * PH + yy) * PW;
      const int64_t sy = yy - pad;
      if (sy < 0 || sy >= H) {
        std::fill(dst, dst + PW, 0.0f);
        continue;
      }
      const int64_t lo = std::min(pad, PW), hi = std::min(PW, pad + W);
      std::fill(dst, dst + lo, 0.0f);
      std::copy(plane + sy * W, plane + sy * W + (hi - lo), dst + lo);
      std::fill(dst + hi, dst + PW, 0.0f);
    }
  }
  alignas(64) float d[A][A][L], t[A][A][L], r[A][A][L];
  const int64_t P = th * tw, T = N * P;
  // L consecutive tiles at a time (across tile rows and images), one per lane.
  for (int64_t j0 = 0; j0 < T; j0 += L) {
    const int64_t n = std::min<int64_t>(L, T - j0);
    for (int64_t l = 0; l < n; ++l) {
      const TileAt at = tile_at(j0 + l, P, tw);
      const float* src = scratch + (at.n * PH + at.ty * M) * PW + at.tx * M;
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) d[i][j][l] = src[i * PW + j];
    }
    for (int64_t l = n; l < L; ++l)
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) d[i][j][l] = 0.0f;
    for (int j = 0; j < A; ++j) apply<A, A, A * L, A * L>(F43::BT, &d[0][j][0], &t[0][j][0]);
    for (int i = 0; i < A; ++i) apply<A, A, L, L>(F43::BT, &t[i][0][0], &r[i][0][0]);
    float* out = v + j0;
    for (int e = 0; e < A * A; ++e) {
      const float* src = &r[e / A][e % A][0];
      float* dst = out + e * v_stride;
      if (n == L) {
        for (int l = 0; l < L; ++l) dst[l] = src[l];
      } else {
        for (int64_t l = 0; l < n; ++l) dst[l] = src[l];
      }
    }
  }
}

ZOO_INLINE void output_channel_t(const float* m, int64_t m_stride, int64_t N, int64_t th,
                                 int64_t tw, float bias, float* y, int64_t y_stride, int64_t Ho,
                                 int64_t Wo) {
  constexpr int A = F43::A, M = F43::M;
  alignas(64) float p[A][A][L], s[M][A][L], o[M][M][L];
  const int64_t P = th * tw, T = N * P;
  for (int64_t j0 = 0; j0 < T; j0 += L) {
    const int64_t n = std::min<int64_t>(L, T - j0);
    const float* in = m + j0;
    for (int e = 0; e < A * A; ++e) {
      float* dst = &p[e / A][e % A][0];
      const float* src = in + e * m_stride;
      if (n == L) {
        for (int l = 0; l < L; ++l) dst[l] = src[l];
      } else {
        for (int l = 0; l < L; ++l) dst[l] = l < n ? src[l] : 0.0f;
      }
    }
    for (int j = 0; j < A; ++j) apply<M, A, A * L, A * L>(F43::AT, &p[0][j][0], &s[0][j][0]);
    for (int i = 0; i < M; ++i) apply<M, A, L, L>(F43::AT, &s[i][0][0], &o[i][0][0]);
    for (int64_t l = 0; l < n; ++l) {
      const TileAt at = tile_at(j0 + l, P, tw);
      const int64_t oy = at.ty * M, ox = at.tx * M;
      float* dst = y + at.n * y_stride + oy * Wo + ox;
      if (oy + M <= Ho && ox + M <= Wo) {
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < M; ++j) dst[i * Wo + j] = o[i][j][l] + bias;
      } else {
        const int64_t rows = std::min<int64_t>(M, Ho - oy), cols = std::min<int64_t>(M, Wo - ox);
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) dst[i * Wo + j] = o[i][j][l] + bias;
      }
    }
  }
}

ZOO_INLINE void grad_channel_t(const float* g, int64_t g_stride, int64_t N, int64_t Ho, int64_t Wo,
                               int64_t th, int64_t tw, float* v, int64_t v_stride) {
  constexpr int A = F43::A, M = F43::M;
  alignas(64) float q[M][M][L], t[A][M][L], r[A][A][L];
  const int64_t P = th * tw, T = N * P;
  for (int64_t j0 = 0; j0 < T; j0 += L) {
    const int64_t n = std::min<int64_t>(L, T - j0);
    for (int64_t l = 0; l < L; ++l) {
      if (l >= n) {
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < M; ++j) q[i][j][l] = 0.0f;
        continue;
      }
      const TileAt at = tile_at(j0 + l, P, tw);
      const int64_t oy = at.ty * M, ox = at.tx * M;
      const float* src = g + at.n * g_stride + oy * Wo + ox;
      if (oy + M <= Ho && ox + M <= Wo) {
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < M; ++j) q[i][j][l] = src[i * Wo + j];
      } else {
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < M; ++j) q[i][j][l] = oy + i < Ho && ox + j < Wo ? src[i * Wo + j] : 0.0f;
      }
    }
    for (int j = 0; j < M; ++j)
      apply<A, M, M * L, M * L, true>(F43::AT, &q[0][j][0], &t[0][j][0]);
    for (int i = 0; i < A; ++i) apply<A, M, L, L, true>(F43::AT, &t[i][0][0], &r[i][0][0]);
    float* out = v + j0;
    for (int e = 0; e < A * A; ++e) {
      const float* src = &r[e / A][e % A][0];
      float* dst = out + e * v_stride;
      for (int64_t l = 0; l < n; ++l) dst[l] = src[l];
    }
  }
}

ZOO_INLINE void weight_grad_t(const float* m, int64_t K, int64_t C, int64_t k0, int64_t k1,
                              float* dw) {
  constexpr int A = F43::A, R = F43::R;
  const int64_t stride = K * C;
  alignas(64) float p[A][A][L], s[R][A][L], r[R][R][L];
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t c0 = 0; c0 < C; c0 += L) {
      const int64_t n = std::min<int64_t>(L, C - c0);
      for (int e = 0; e < A * A; ++e) {
        const float* src = m + e * stride + k * C + c0;
        for (int l = 0; l < L; ++l) p[e / A][e % A][l] = l < n ? src[l] : 0.0f;
      }
      for (int j = 0; j < A; ++j)
        apply<R, A, A * L, A * L, true>(F43::G, &p[0][j][0], &s[0][j][0]);
      for (int i = 0; i < R; ++i) apply<R, A, L, L, true>(F43::G, &s[i][0][0], &r[i][0][0]);
      for (int64_t l = 0; l < n; ++l)
        for (int i = 0; i < R; ++i)
          for (int j = 0; j < R; ++j) dw[((k * C) + c0 + l) * R * R + i * R + j] = r[i][j][l];
    }
  }
}

ZOO_INLINE void weight_transform_1d_t(const float* w, int64_t K, int64_t C, int64_t k0, int64_t k1,
                                      float* u) {
  const int64_t stride = K * C;
  alignas(64) float g[3][L], r[6][L];
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t c0 = 0; c0 < C; c0 += L) {
      const int64_t n = std::min<int64_t>(L, C - c0);
      for (int i = 0; i < 3; ++i)
        for (int l = 0; l < L; ++l) g[i][l] = l < n ? w[((k * C) + c0 + l) * 3 + i] : 0.0f;
      apply<6, 3, L, L>(F43::G, &g[0][0], &r[0][0]);
      for (int e = 0; e < 6; ++e)
        for (int64_t l = 0; l < n; ++l) u[e * stride + k * C + c0 + l] = r[e][l];
    }
  }
}

ZOO_INLINE void input_channel_1d_t(const float* x, int64_t x_stride, const Tile1d* tiles,
                                   int64_t total, int64_t T, int64_t d, float* v,
                                   int64_t v_stride) {
  alignas(64) float in[6][L], r[6][L];
  for (int64_t j0 = 0; j0 < total; j0 += L) {
    const int64_t n = std::min<int64_t>(L, total - j0);
    for (int64_t l = 0; l < L; ++l) {
      if (l >= n) {
        for (int i = 0; i < 6; ++i) in[i][l] = 0.0f;
        continue;
      }
      const Tile1d& t = tiles[j0 + l];
      const float* src = x + t.n * x_stride;
      if (t.t0 >= d && t.t0 + 4 * d < T) {
        for (int i = 0; i < 6; ++i) in[i][l] = src[t.t0 + (i - 1) * d];
        continue;
      }
      for (int i = 0; i < 6; ++i) {
        const int64_t at = t.t0 + (i - 1) * d;
        in[i][l] = at >= 0 && at < T ? src[at] : 0.0f;
      }
    }
    apply<6, 6, L, L>(F43::BT, &in[0][0], &r[0][0]);
    for (int e = 0; e < 6; ++e)
      for (int64_t l = 0; l < n; ++l) v[e * v_stride + j0 + l] = r[e][l];
  }
}

ZOO_INLINE void output_channel_1d_t(const float* m, int64_t m_stride, const Tile1d* tiles,
                                    int64_t total, int64_t T, int64_t d, float bias,
                                    const float* add, int64_t add_stride, float* y,
                                    int64_t y_stride) {
  alignas(64) float p[6][L], o[4][L];
  for (int64_t j0 = 0; j0 < total; j0 += L) {
    const int64_t n = std::min<int64_t>(L, total - j0);
    for (int e = 0; e < 6; ++e)
      for (int l = 0; l < L; ++l) p[e][l] = l < n ? m[e * m_stride + j0 + l] : 0.0f;
    apply<4, 6, L, L>(F43::AT, &p[0][0], &o[0][0]);
    for (int64_t l = 0; l < n; ++l) {
      const Tile1d& t = tiles[j0 + l];
      float* dst = y + t.n * y_stride;
      const float* extra = add ? add + t.n * add_stride : nullptr;
      for (int i = 0; i < 4; ++i) {
        const int64_t at = t.t0 + i * d;
        if (at < T) dst[at] = o[i][l] + bias + (extra ? extra[at] : 0.0f);
      }
    }
  }
}

}  // namespace

ZOO_WINO_CLONES
void weight_transform(const float* w, int64_t K, int64_t C, int64_t k0, int64_t k1, float* u) {
  weight_transform_t(w, K, C, k0, k1, u);
}

ZOO_WINO_CLONES
void input_channel(const float* x, int64_t x_stride, int64_t N, int64_t H, int64_t W, int64_t pad,
                   int64_t th, int64_t tw, float* v, float* scratch, int64_t v_stride) {
  input_channel_t(x, x_stride, N, H, W, pad, th, tw, v, scratch, v_stride);
}

ZOO_WINO_CLONES
void output_channel(const float* m, int64_t m_stride, int64_t N, int64_t th, int64_t tw,
                    float bias, float* y, int64_t y_stride, int64_t Ho, int64_t Wo) {
  output_channel_t(m, m_stride, N, th, tw, bias, y, y_stride, Ho, Wo);
}

ZOO_WINO_CLONES
void grad_channel(const float* g, int64_t g_stride, int64_t N, int64_t Ho, int64_t Wo, int64_t th,
                  int64_t tw, float* v, int64_t v_stride) {
  grad_channel_t(g, g_stride, N, Ho, Wo, th, tw, v, v_stride);
}

ZOO_WINO_CLONES
void weight_grad(const float* m, int64_t K, int64_t C, int64_t k0, int64_t k1, float* dw) {
  weight_grad_t(m, K, C, k0, k1, dw);
}

ZOO_WINO_CLONES
void weight_transform_1d(const float* w, int64_t K, int64_t C, int64_t k0, int64_t k1, float* u) {
  weight_transform_1d_t(w, K, C, k0, k1, u);
}

ZOO_WINO_CLONES
void input_channel_1d(const float* x, int64_t x_stride, const Tile1d* tiles, int64_t total,
                      int64_t T, int64_t d, float* v, int64_t v_stride) {
  input_channel_1d_t(x, x_stride, tiles, total, T, d, v, v_stride);
}

ZOO_WINO_CLONES
void output_channel_1d(const float* m, int64_t m_stride, const Tile1d* tiles, int64_t total,
                       int64_t T, int64_t d, float bias, const float* add, int64_t add_stride,
                       float* y, int64_t y_stride) {
  output_channel_1d_t(m, m_stride, tiles, total, T, d, bias, add, add_stride, y, y_stride);
}

}  // namespace zoo::wino
