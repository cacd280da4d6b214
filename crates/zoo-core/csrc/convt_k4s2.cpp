// The 4x4 transposed convolution at stride 2, padding 1, as four 2x2 convolutions (one per
// output phase) with the output channels in the vector lanes.
//
// Output pixel (2m + a, 2p + b) of y = conv_transpose2d(x, w, stride 2, padding 1) reads only
// the 2x2 input window starting at (m + a - 1, p + b - 1), through the kernel taps
// (3 - a - 2i, 3 - b - 2j) for window offset (i, j). So each phase (a, b) is a plain 2x2
// convolution of the zero-padded input, and together the four phases do exactly the products of
// the direct transposed convolution, no more.
//
// Why not libtorch's: oneDNN runs this layer through its brgemm "strided backward-data" kernel,
// which here reaches ~86 GFLOP/s against ~130 for the forward convolution of the same shape, and
// hands libtorch a channels-last result that libtorch then copies to NCHW
// (docs/benchmarks.md, the VAE section).
//
// The kernel: each image is copied once into a zero-padded (H+2, W+2, C) scratch, channels
// innermost (16 x 16 in-register transposes). A tile is up to 14 pixels of one phase (up to 7
// of a row, in up to 4 rows: 2 x 7 for the VAE's 7x7 input) times 32 output channels, 28
// AVX-512 accumulators, fed by one broadcast input value per pixel against two vectors of
// filters per input channel and tap. The
// tiles of both column phases of a row are then transposed 16 x 16 in registers so that each
// output channel's row of up to 14 pixels is one (masked) store, with the bias added.
//
// Products with the zero padding are skipped: for the window row (or column) that reaches past
// the image, a tile on the image's top (bottom, left, right) edge leaves out its first row
// (last row, first pixel, last pixel), each such choice its own copy of the inner loop (for
// the conv VAE's 7x7 input, 1 - (13/14)^2 = 14% of the products).
//
// Also here: the strided 4x4 convolution (the same tiles with 16 taps at stride 2) and its
// filters' gradient, Winograd F(7, 2) variants of both convolutions for rows of 7 outputs, the single-channel 4x4 stride-2 convolution (a grey image's first layer),
// and the transposed convolution to few output channels (an image decoder's last layer) with
// its filters' gradient, each described at its function.
#include "convt_k4s2.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ZOO_CONVT_X86 1
// (GCC 12's unpack and shuffle intrinsics start from _mm512_undefined_ps and then warn that it
// may be uninitialised; every lane of their results is defined)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace zoo {

int64_t convt_k4s2_packed_size(int64_t c, int64_t k) { return 16 * c * k; }

int64_t convt_k4s2_scratch_size(int64_t c, int64_t h, int64_t w) { return (h + 2) * (w + 2) * c; }

// rows of the padded image, each with room for reads of 34 floats from any even column
int64_t conv1_k4s2_scratch_size(int64_t h, int64_t w) { return (h + 2) * (w + 34); }

// The few-output kernels work on whole images as flat pixel vectors: (H W) floats rounded up to
// whole vectors, plus a vector of slack on each side for their shifted masked loads.
namespace {
int64_t few_vectors(int64_t h, int64_t w) { return (h * w + 15) / 16; }
int64_t few_plane(int64_t h, int64_t w) { return few_vectors(h, w) * 16 + 32; }
}  // namespace

// the 16 tap planes of one output channel
int64_t convt_few_k4s2_scratch_size(int64_t, int64_t h, int64_t w) { return 16 * few_plane(h, w); }

// the 16 tap planes of the output's gradient, one zero-padded row of it, and the accumulators
// (C K taps x 16 lanes, K x 16 for the bias, C x 16 for x's sums)
int64_t convt_few_k4s2_wgrad_scratch_size(int64_t c, int64_t k, int64_t h, int64_t w) {
  return 16 * few_plane(h, w) + ((2 * w + 15) / 16 + 1) * 32 + 16 + c * k * 256 + k * 16 + c * 16;
}

// packed[a][b][i][j][ci][k]: phase (a, b), window offset (i, j), output channel innermost.
void convt_k4s2_pack(const float* w, int64_t c, int64_t k, float* packed) {
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          const int ky = 3 - a - 2 * i, kx = 3 - b - 2 * j;
          float* dst = packed + ((((a * 2 + b) * 2 + i) * 2 + j) * c) * k;
          for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t ko = 0; ko < k; ++ko) dst[ci * k + ko] = w[((ci * k + ko) * 4 + ky) * 4 + kx];
        }
}

#ifdef ZOO_CONVT_X86

bool convt_k4s2_available() { return __builtin_cpu_supports("avx512f"); }

namespace {

// permutex2var indices: the even / odd lanes of two vectors (32 floats) as one
__attribute__((target("avx512f"))) inline __m512i even_lanes() {
  return _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
}
__attribute__((target("avx512f"))) inline __m512i odd_lanes() {
  return _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
}

// A tile's pixels per row (at most kPix) times rows (at most kRows) is at most kTilePix: two
// accumulators each, 28 of the 32 vector registers, the rest for the filters and the broadcast.
constexpr int kPix = 7, kRows = 4, kTilePix = 14;

// acc[r][q] += x[r][q stride + ci] f[ci] over the input channels ci, for rows r of [R0, R1) and
// pixels q of [Q0, Q1): the products of one tap for a tile of R rows of P pixels and 32 output
// channels (f[ci] two vectors at f + ci k).
template <int R, int P, int R0, int R1, int Q0, int Q1>
__attribute__((target("avx512f"), always_inline)) inline void fma_tap(
    __m512 (&acc)[R][P][2], const float* const (&x)[R], const float* f, int64_t c, int64_t k,
    int64_t stride) {
  if (R0 >= R1 || Q0 >= Q1) return;
  for (int64_t ci = 0; ci < c; ++ci) {
    const __m512 f0 = _mm512_loadu_ps(f + ci * k), f1 = _mm512_loadu_ps(f + ci * k + 16);
    for (int r = R0; r < R1; ++r)
      for (int q = Q0; q < Q1; ++q) {
        const __m512 xv = _mm512_set1_ps(x[r][q * stride + ci]);
        acc[r][q][0] = _mm512_fmadd_ps(xv, f0, acc[r][q][0]);
        acc[r][q][1] = _mm512_fmadd_ps(xv, f1, acc[r][q][1]);
      }
  }
}

// Which of a tile's products one tap leaves out: those of its first row (`top`: the tap reads
// the padding above the image there), its last (`bottom`), its first pixel (`left`) or its
// last (`right`); a tap is never on two opposite sides.
struct Edges {
  bool top, bottom, left, right;
};

template <int R, int P, int R0, int R1>
__attribute__((target("avx512f"), always_inline)) inline void edge_columns(
    __m512 (&acc)[R][P][2], const float* const (&x)[R], const float* f, int64_t c, int64_t k,
    int64_t stride, Edges e) {
  if (e.left) {
    fma_tap<R, P, R0, R1, 1, P>(acc, x, f, c, k, stride);
  } else if (e.right) {
    fma_tap<R, P, R0, R1, 0, P - 1>(acc, x, f, c, k, stride);
  } else {
    fma_tap<R, P, R0, R1, 0, P>(acc, x, f, c, k, stride);
  }
}

// fma_tap for the whole tile but the products on the padding
template <int R, int P>
__attribute__((target("avx512f"), always_inline)) inline void edge_tap(
    __m512 (&acc)[R][P][2], const float* const (&x)[R], const float* f, int64_t c, int64_t k,
    int64_t stride, Edges e) {
  if (e.top) {
    edge_columns<R, P, 1, R>(acc, x, f, c, k, stride, e);
  } else if (e.bottom) {
    edge_columns<R, P, 0, R - 1>(acc, x, f, c, k, stride, e);
  } else {
    edge_columns<R, P, 0, R>(acc, x, f, c, k, stride, e);
  }
}

template <int R, int P>
__attribute__((target("avx512f"), always_inline)) inline void store_tile(
    const __m512 (&acc)[R][P][2], float* t) {
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < P; ++q) {
      _mm512_store_ps(t + (r * 8 + q) * 32, acc[r][q][0]);
      _mm512_store_ps(t + (r * 8 + q) * 32 + 16, acc[r][q][1]);
    }
}

// One tile: rows m .. m+R-1, pixels p0 .. p0+P-1 of phase (a, b), output channels k0 .. k0+31,
// into t[(r 8 + q) 32 + channel]. `edge`: which sides of the tile are the image's (products on
// the padding are skipped).
template <int R, int P>
__attribute__((target("avx512f"))) void tile(const float* xp, const float* packed, int64_t c,
                                             int64_t k, int64_t wp2, int64_t m, int64_t p0, int a,
                                             int b, int64_t k0, Edges edge, float* t) {
  __m512 acc[R][P][2];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < P; ++q) acc[r][q][0] = acc[r][q][1] = _mm512_setzero_ps();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      const float* f = packed + ((((a * 2 + b) * 2 + i) * 2 + j) * c) * k + k0;
      const float* x[R];
      for (int r = 0; r < R; ++r) x[r] = xp + ((m + r + a + i) * wp2 + (p0 + b + j)) * c;
      // (window (i, j) reads input row m + r + a + i - 1, column p0 + q + b + j - 1)
      edge_tap<R, P>(acc, x, f, c, k, c,
                     {edge.top && a == 0 && i == 0, edge.bottom && a == 1 && i == 1,
                      edge.left && b == 0 && j == 0, edge.right && b == 1 && j == 1});
    }
  store_tile<R, P>(acc, t);
}

using TileFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                        int, int, int64_t, Edges, float*);

// make(R, P) (std::integral_constant<int>s) for a tile of `rows` (1-4) rows of `pix` (1-7)
// pixels: the tile function instantiated for that shape.
template <typename Fn, typename Make>
Fn pick_shape(int64_t rows, int64_t pix, const Make& make) {
  auto pixels = [&](auto r) -> Fn {
    switch (pix) {
      case 1: return make(r, std::integral_constant<int, 1>());
      case 2: return make(r, std::integral_constant<int, 2>());
      case 3: return make(r, std::integral_constant<int, 3>());
      case 4: return make(r, std::integral_constant<int, 4>());
      case 5: return make(r, std::integral_constant<int, 5>());
      case 6: return make(r, std::integral_constant<int, 6>());
      default: return make(r, std::integral_constant<int, 7>());
    }
  };
  switch (rows) {
    case 1: return pixels(std::integral_constant<int, 1>());
    case 2: return pixels(std::integral_constant<int, 2>());
    case 3: return pixels(std::integral_constant<int, 3>());
    default: return pixels(std::integral_constant<int, 4>());
  }
}

TileFn pick(int64_t rows, int64_t p) {
  return pick_shape<TileFn>(rows, p, [](auto r, auto q) -> TileFn {
    return tile<decltype(r)::value, decltype(q)::value>;
  });
}

// n split into the fewest chunks of at most `most`, as even as can be: the chunks' size.
int64_t even_chunk(int64_t n, int64_t most) {
  const int64_t chunks = (n + most - 1) / most;
  return (n + chunks - 1) / chunks;
}

// In-register transpose of 16 rows of 16 floats: afterwards r[i] holds column i.
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a0 = _mm512_castps_pd(t[4 * i]), a1 = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d a2 = _mm512_castps_pd(t[4 * i + 2]), a3 = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  // each 128-bit lane L of r[4i + s] now holds rows 4i .. 4i+3 of column 4L + s
  for (int i = 0; i < 2; ++i)
    for (int s = 0; s < 4; ++s) {
      t[8 * i + s] = _mm512_shuffle_f32x4(r[8 * i + s], r[8 * i + 4 + s], 0x88);
      t[8 * i + 4 + s] = _mm512_shuffle_f32x4(r[8 * i + s], r[8 * i + 4 + s], 0xdd);
    }
  for (int s = 0; s < 8; ++s) {
    r[s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0x88);
    r[8 + s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0xdd);
  }
}

// Asks for `floats` floats from p in the L2 cache, ahead of their use (the next image's input:
// read channel by channel, row by row, its first reads otherwise wait on memory one row at a
// time).
__attribute__((target("avx512f"))) inline void prefetch_l2(const float* p, int64_t floats) {
  for (int64_t i = 0; i < floats; i += 16) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T1);
}

// The same for memory about to be written (the next image's output).
inline void prefetch_l2_write(float* p, int64_t floats) {
  for (int64_t i = 0; i < floats; i += 16) __builtin_prefetch(p + i, 1, 2);
}

// One image x (C, H, W) -> the zero-padded (H+2, W+2, C) scratch: blocks of 16 channels x up to
// 16 pixels of a row transposed in registers, the channels past the last whole block one by one.
__attribute__((target("avx512f"))) void pad_channels_last(const float* x, int64_t c, int64_t h,
                                                          int64_t w, float* scratch) {
  const int64_t wp2 = w + 2;
  // the border (the interior is all written below)
  std::memset(scratch, 0, sizeof(float) * wp2 * c);
  std::memset(scratch + (h + 1) * wp2 * c, 0, sizeof(float) * wp2 * c);
  for (int64_t iy = 1; iy <= h; ++iy) {
    std::memset(scratch + iy * wp2 * c, 0, sizeof(float) * c);
    std::memset(scratch + (iy * wp2 + w + 1) * c, 0, sizeof(float) * c);
  }
  const int64_t whole = c / 16 * 16;
  for (int64_t iy = 0; iy < h; ++iy) {
    float* row = scratch + ((iy + 1) * wp2 + 1) * c;
    // (the next row of every channel into L1 meanwhile: the rows are short and far apart)
    if (iy + 1 < h)
      for (int64_t ci = 0; ci < c; ++ci) {
        const float* next = x + (ci * h + iy + 1) * w;
        _mm_prefetch(reinterpret_cast<const char*>(next), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(next + w - 1), _MM_HINT_T0);
      }
    for (int64_t ix0 = 0; ix0 < w; ix0 += 16) {
      const int64_t pix = std::min<int64_t>(16, w - ix0);
      const __mmask16 mask = static_cast<__mmask16>((1u << pix) - 1u);
      for (int64_t c0 = 0; c0 < whole; c0 += 16) {
        __m512 v[16];
        for (int s = 0; s < 16; ++s) v[s] = _mm512_maskz_loadu_ps(mask, x + ((c0 + s) * h + iy) * w + ix0);
        transpose16(v);
        for (int64_t q = 0; q < pix; ++q) _mm512_storeu_ps(row + (ix0 + q) * c + c0, v[q]);
      }
    }
    for (int64_t ci = whole; ci < c; ++ci)
      for (int64_t ix = 0; ix < w; ++ix) row[ix * c + ci] = x[(ci * h + iy) * w + ix];
  }
}

}  // namespace

namespace {

// v[s] (s < 16: channels kk + s, after a 16 x 16 transpose) -> the rows of those channels at
// dst + s plane, the lanes of `mask`, with the bias and the ReLU.
__attribute__((target("avx512f"), always_inline)) inline void store_channels(
    const __m512 (&v)[16], float* dst, int64_t plane, __mmask16 mask, const float* bias,
    int64_t kk, bool relu) {
  for (int s = 0; s < 16; ++s) {
    __m512 out = bias ? _mm512_add_ps(v[s], _mm512_set1_ps(bias[kk + s])) : v[s];
    if (relu) out = _mm512_max_ps(out, _mm512_setzero_ps());
    _mm512_mask_storeu_ps(dst + s * plane, mask, out);
  }
}

// Tiles t0, t1 of row phase a (column phases 0 and 1: t_b[(r 8 + q) 32 + channel], rows m ..
// m+rows-1, pixels p0 .. p0+pix-1 of the input, 32 output channels from k0) -> the output
// image yn (K, oh, ow): the two column phases interleaved by 16 x 16 transposes in registers,
// each output channel's row one masked store, with the bias and the ReLU.
__attribute__((target("avx512f"))) void store_phases(const float* t0, const float* t1,
                                                     int64_t rows, int64_t pix, int64_t m,
                                                     int64_t p0, int a, int64_t k0,
                                                     const float* bias, bool relu, float* yn,
                                                     int64_t oh, int64_t ow) {
  const int64_t plane = oh * ow;
  // output columns 2 p0 .. 2 (p0 + pix) - 1 alternate between the two column phases
  const __mmask16 mask = static_cast<__mmask16>((1u << (2 * pix)) - 1u);
  for (int64_t r = 0; r < rows; ++r)
    for (int half = 0; half < 2; ++half) {
      __m512 v[16];
      for (int q = 0; q < 8; ++q) {
        v[2 * q] = _mm512_load_ps(&t0[(r * 8 + q) * 32 + 16 * half]);
        v[2 * q + 1] = _mm512_load_ps(&t1[(r * 8 + q) * 32 + 16 * half]);
      }
      transpose16(v);
      const int64_t kk = k0 + 16 * half;
      store_channels(v, yn + kk * plane + (2 * (m + r) + a) * ow + 2 * p0, plane, mask, bias, kk,
                     relu);
    }
}

}  // namespace

__attribute__((target("avx512f"))) void convt_k4s2_images(const float* x, const float* packed,
                                                          const float* bias, float* y, int64_t c,
                                                          int64_t k, int64_t h, int64_t w,
                                                          int64_t n0, int64_t n1, float* scratch,
                                                          bool relu) {
  const int64_t wp2 = w + 2, oh = 2 * h, ow = 2 * w, plane = oh * ow;
  // tiles: pixel rows as even as can be, then as many rows as the registers take
  const int64_t pix_step = even_chunk(w, kPix);
  const int64_t row_step = even_chunk(h, std::min<int64_t>(kRows, kTilePix / pix_step));
  alignas(64) float t[2][kRows * 8 * 32] = {};  // (pixels past a tile's: read, never stored)
  for (int64_t n = n0; n < n1; ++n) {
    if (n + 1 < n1) prefetch_l2(x + (n + 1) * c * h * w, c * h * w);
    pad_channels_last(x + n * c * h * w, c, h, w, scratch);
    float* yn = y + n * k * plane;
    for (int64_t k0 = 0; k0 < k; k0 += 32)
      for (int a = 0; a < 2; ++a)
        for (int64_t m = 0; m < h; m += row_step) {
          const int64_t rows = std::min(row_step, h - m);
          for (int64_t p0 = 0; p0 < w; p0 += pix_step) {
            const int64_t pix = std::min(pix_step, w - p0);
            const TileFn f = pick(rows, pix);
            const Edges edge = {m == 0, m + rows == h, p0 == 0, p0 + pix == w};
            for (int b = 0; b < 2; ++b) f(scratch, packed, c, k, wp2, m, p0, a, b, k0, edge, t[b]);
            store_phases(t[0], t[1], rows, pix, m, p0, a, k0, bias, relu, yn, oh, ow);
          }
        }
  }
}

// The transposed layer on a 7x7 input (the conv VAE's decoder, and its encoder's input
// gradient) with Winograd's minimal filtering F(7, 2) along the rows: for one row phase a, tap
// row i and column phase b, each output row's 7 pixels are a 2-tap correlation of 8 padded
// input values, done as 8 products in the transformed domain (points 0, +-1, +-2, +-1/2 and
// infinity) instead of 14. So per image the padded rows are transformed once (8 values per
// row, column phase and channel), the products are a GEMM per transform point over the tap
// rows and channels (the tiles above: 7 output rows x 32 channels, the padding row skipped),
// and the 8 sums per row go back to 7 pixels before the usual NCHW stores. fp32 error of the
// transform: ~2e-6 relative on sums over 64 channels (tools' one-off check; the tests compare
// with libtorch).
namespace {

constexpr float kWinoAT[7][8] = {
    {1, 1, 1, 1, 1, 1, 1, 0},
    {0, 1, -1, 2, -2, 0.5f, -0.5f, 0},
    {0, 1, 1, 4, 4, 0.25f, 0.25f, 0},
    {0, 1, -1, 8, -8, 0.125f, -0.125f, 0},
    {0, 1, 1, 16, 16, 0.0625f, 0.0625f, 0},
    {0, 1, -1, 32, -32, 0.03125f, -0.03125f, 0},
    {0, 1, 1, 64, 64, 0.015625f, 0.015625f, 1},
};
constexpr float kWinoG[8][2] = {{1, 0}, {1, 1}, {1, -1}, {1, 2}, {1, -2}, {1, 0.5f}, {1, -0.5f}, {0, 1}};
constexpr float kWinoBT[8][8] = {
    {1, 0, -21.0f / 4, 0, 21.0f / 4, 0, -1, 0},
    {0, -2.0f / 9, -2.0f / 9, 17.0f / 18, 17.0f / 18, -2.0f / 9, -2.0f / 9, 0},
    {0, 2.0f / 9, -2.0f / 9, -17.0f / 18, 17.0f / 18, 2.0f / 9, -2.0f / 9, 0},
    {0, 1.0f / 180, 1.0f / 360, -1.0f / 36, -1.0f / 72, 1.0f / 45, 1.0f / 90, 0},
    {0, -1.0f / 180, 1.0f / 360, 1.0f / 36, -1.0f / 72, -1.0f / 45, 1.0f / 90, 0},
    {0, 64.0f / 45, 128.0f / 45, -16.0f / 9, -32.0f / 9, 16.0f / 45, 32.0f / 45, 0},
    {0, -64.0f / 45, 128.0f / 45, 16.0f / 9, -32.0f / 9, -16.0f / 45, 32.0f / 45, 0},
    {0, -1, 0, 21.0f / 4, 0, -21.0f / 4, 0, 1},
};


// out[i] = sum over j of m[i][j] in[j], the zero entries left out (m is one of the constant
// matrices above: the loops unroll and the entries fold into the code)
template <int R, int C>
__attribute__((target("avx512f"), always_inline)) inline void mat_vecs(const float (&m)[R][C],
                                                                      const __m512 (&in)[C],
                                                                      __m512 (&out)[R]) {
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    __m512 acc = _mm512_setzero_ps();
    #pragma GCC unroll 8
    for (int u = 0; u < C; ++u)
      if (m[r][u] != 0.0f) acc = _mm512_fmadd_ps(_mm512_set1_ps(m[r][u]), in[u], acc);
    out[r] = acc;
  }
}

// V[t] (at v + t c) = BT of 8 padded values of 16 channels, `step` floats apart from src
__attribute__((target("avx512f"), always_inline)) inline void wino_in(const float* src,
                                                                     int64_t step, float* v,
                                                                     int64_t c) {
  __m512 d[8], o[8];
  #pragma GCC unroll 8
  for (int u = 0; u < 8; ++u) d[u] = _mm512_loadu_ps(src + u * step);
  mat_vecs(kWinoBT, d, o);
  #pragma GCC unroll 8
  for (int t = 0; t < 8; ++t) _mm512_storeu_ps(v + t * c, o[t]);
}

// One transform point t of R = 7 output rows x 32 channels: acc[r] += sum over the taps (tap
// row pointers `rows(tap, r)`, filters `filters(tap)`) and channels; `edges(tap)` says which of
// the first and last rows that tap leaves out.
template <int Taps, typename Rows, typename Filters, typename EdgesOf>
__attribute__((target("avx512f"), always_inline)) inline void wino_point(
    __m512 (&acc)[7][1][2], int64_t c, int64_t k, const Rows& rows, const Filters& filters,
    const EdgesOf& edges) {
  for (int r = 0; r < 7; ++r) acc[r][0][0] = acc[r][0][1] = _mm512_setzero_ps();
  for (int tap = 0; tap < Taps; ++tap) {
    const float* xr[7];
    for (int r = 0; r < 7; ++r) xr[r] = rows(tap, r);
    edge_tap<7, 1>(acc, xr, filters(tap), c, k, 0, edges(tap));
  }
}

// The 8 points' sums mt[t][r][32] -> 7 pixels per row, into t[(r 8 + p) 32 + channel].
__attribute__((target("avx512f"))) void wino_out(const float (&mt)[8][7][32], float* t) {
  for (int r = 0; r < 7; ++r)
    for (int half = 0; half < 2; ++half) {
      __m512 m[8], o[7];
      #pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) m[q] = _mm512_load_ps(&mt[q][r][16 * half]);
      mat_vecs(kWinoAT, m, o);
      #pragma GCC unroll 7
      for (int p = 0; p < 7; ++p) _mm512_store_ps(&t[(r * 8 + p) * 32 + 16 * half], o[p]);
    }
}

}  // namespace

int64_t convt_k4s2_wino7_packed_size(int64_t c, int64_t k) { return 64 * c * k; }

// the padded image (9 x 9 x C) and its transformed rows (2 column phases x 7 rows x 8 x C)
int64_t convt_k4s2_wino7_scratch_size(int64_t c) { return 81 * c + 2 * 7 * 8 * c; }

// packed[a][b][i][t][ci][k] = sum over j of G[t][j] w[ci][k][3 - a - 2i][3 - b - 2j]
void convt_k4s2_wino7_pack(const float* w, int64_t c, int64_t k, float* packed) {
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int i = 0; i < 2; ++i)
        for (int t = 0; t < 8; ++t) {
          float* dst = packed + ((((a * 2 + b) * 2 + i) * 8 + t) * c) * k;
          const int ky = 3 - a - 2 * i;
          for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t ko = 0; ko < k; ++ko) {
              const float* row = w + ((ci * k + ko) * 4 + ky) * 4;
              dst[ci * k + ko] = kWinoG[t][0] * row[3 - b] + kWinoG[t][1] * row[1 - b];
            }
        }
}

__attribute__((target("avx512f"))) void convt_k4s2_wino7_images(const float* x,
                                                                const float* packed,
                                                                const float* bias, float* y,
                                                                int64_t c, int64_t k, int64_t n0,
                                                                int64_t n1, float* scratch,
                                                                bool relu) {
  constexpr int64_t h = 7, w = 7, wp2 = 9;
  float* xp = scratch;     // (9, 9, C)
  float* v = xp + 81 * c;  // [b][input row 0..6][t][C]
  alignas(64) float mt[8][7][32];
  alignas(64) float tb[2][8 * 8 * 32] = {};  // (pixels past 7: read, never stored)
  for (int64_t n = n0; n < n1; ++n) {
    if (n + 1 < n1) prefetch_l2(x + (n + 1) * c * h * w, c * h * w);
    pad_channels_last(x + n * c * h * w, c, h, w, xp);
    // the rows' transforms: padded row iy + 1, values at padded columns b .. b+7
    for (int b = 0; b < 2; ++b)
      for (int64_t iy = 0; iy < h; ++iy)
        for (int64_t c0 = 0; c0 < c; c0 += 16)
          wino_in(xp + ((iy + 1) * wp2 + b) * c + c0, c, v + (b * h + iy) * 8 * c + c0, c);
    float* yn = y + n * k * 4 * h * w;
    for (int64_t k0 = 0; k0 < k; k0 += 32)
      for (int a = 0; a < 2; ++a) {
        for (int b = 0; b < 2; ++b) {
          for (int t = 0; t < 8; ++t) {
            __m512 acc[7][1][2];
            // output row r, window row i reads input row r + a + i - 1: -1 for r = 0, a = i = 0;
            // 7 for r = 6, a = i = 1 (those rows are left out)
            wino_point<2>(
                acc, c, k,
                [&](int i, int r) {
                  const int64_t iy = std::max<int64_t>(0, std::min<int64_t>(h - 1, r + a + i - 1));
                  return v + ((b * h + iy) * 8 + t) * c;
                },
                [&](int i) { return packed + ((((a * 2 + b) * 2 + i) * 8 + t) * c) * k + k0; },
                [&](int i) { return Edges{a == 0 && i == 0, a == 1 && i == 1, false, false}; });
            for (int r = 0; r < 7; ++r) {
              _mm512_store_ps(&mt[t][r][0], acc[r][0][0]);
              _mm512_store_ps(&mt[t][r][16], acc[r][0][1]);
            }
          }
          wino_out(mt, tb[b]);
        }
        store_phases(tb[0], tb[1], 7, 7, 0, 0, a, k0, bias, relu, yn, 2 * h, 2 * w);
      }
  }
}

// The single-channel case: output (oy, ox) reads the padded image at (2 oy + ky, 2 ox + kx), so
// for one output row and 16 columns the 16 taps are 16 vectors, each the even or the odd lanes
// of 32 padded values (two permutes per pair of loads); every output channel is then 16 FMAs
// of broadcast filter taps against them, stored as one (masked) row of NCHW.
__attribute__((target("avx512f"))) void conv1_k4s2_images(const float* x, const float* w,
                                                          const float* bias, float* y, int64_t k,
                                                          int64_t h, int64_t wd, int64_t n0,
                                                          int64_t n1, float* scratch, bool relu) {
  const int64_t oh = h / 2, ow = wd / 2, stride = wd + 34;
  const __m512i even = even_lanes(), odd = odd_lanes();
  std::memset(scratch, 0, sizeof(float) * conv1_k4s2_scratch_size(h, wd));
  for (int64_t n = n0; n < n1; ++n) {
    const float* xn = x + n * h * wd;
    if (n + 1 < n1) {
      prefetch_l2(xn + h * wd, h * wd);
      prefetch_l2_write(y + (n + 1) * k * oh * ow, k * oh * ow);
    }
    for (int64_t iy = 0; iy < h; ++iy) std::memcpy(scratch + (iy + 1) * stride + 1, xn + iy * wd, sizeof(float) * wd);
    float* yn = y + n * k * oh * ow;
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox0 = 0; ox0 < ow; ox0 += 16) {
        const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, ow - ox0)) - 1u);
        __m512 v[16];
        for (int ky = 0; ky < 4; ++ky) {
          const float* row = scratch + (2 * oy + ky) * stride + 2 * ox0;
          const __m512 lo = _mm512_loadu_ps(row), hi = _mm512_loadu_ps(row + 16);
          const __m512 lo2 = _mm512_loadu_ps(row + 2), hi2 = _mm512_loadu_ps(row + 18);
          v[ky * 4] = _mm512_permutex2var_ps(lo, even, hi);
          v[ky * 4 + 1] = _mm512_permutex2var_ps(lo, odd, hi);
          v[ky * 4 + 2] = _mm512_permutex2var_ps(lo2, even, hi2);
          v[ky * 4 + 3] = _mm512_permutex2var_ps(lo2, odd, hi2);
        }
        for (int64_t c = 0; c < k; c += 4) {
          __m512 acc[4];
          for (int u = 0; u < 4; ++u) acc[u] = _mm512_set1_ps(bias ? bias[c + u] : 0.0f);
          for (int t = 0; t < 16; ++t)
            for (int u = 0; u < 4; ++u)
              acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(w[(c + u) * 16 + t]), v[t], acc[u]);
          for (int u = 0; u < 4; ++u) {
            if (relu) acc[u] = _mm512_max_ps(acc[u], _mm512_setzero_ps());
            _mm512_mask_storeu_ps(yn + ((c + u) * oh + oy) * ow + ox0, mask, acc[u]);
          }
        }
      }
  }
}

namespace {

// Lanes p of a 16-column chunk starting at column p0 whose column p0 + p and source column
// p0 + p + d both lie in 0 .. w-1.
inline __mmask16 shift_mask(int64_t p0, int64_t d, int64_t w) {
  uint32_t m = 0;
  for (int p = 0; p < 16; ++p) {
    const int64_t col = p0 + p;
    if (col < w && col + d >= 0 && col + d < w) m |= 1u << p;
  }
  return static_cast<__mmask16>(m);
}

// Valid lanes of flat pixel vector v of an image of hw pixels.
inline __mmask16 flat_mask(int64_t v, int64_t hw) {
  const int64_t left = hw - 16 * v;
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

// Eight tap planes (taps t0 .. t0+7) of output channel ko at pixel vectors v0 .. v0+P-1:
// T[t][pix] = sum over ci of w[ci][ko][t] x[ci][pix].
template <int P>
__attribute__((target("avx512f"))) void tap_tile(const float* x, const float* w, int64_t c,
                                                 int64_t k, int64_t ko, int64_t hw, int64_t v0,
                                                 int t0, float* taps, int64_t plane) {
  __m512 acc[8][P];
  #pragma GCC unroll 16
  for (int t = 0; t < 8; ++t)
    #pragma GCC unroll 16
    for (int q = 0; q < P; ++q) acc[t][q] = _mm512_setzero_ps();
  __mmask16 mask[P];
  #pragma GCC unroll 16
  for (int q = 0; q < P; ++q) mask[q] = flat_mask(v0 + q, hw);
  for (int64_t ci = 0; ci < c; ++ci) {
    __m512 xv[P];
    #pragma GCC unroll 16
    for (int q = 0; q < P; ++q) xv[q] = _mm512_maskz_loadu_ps(mask[q], x + ci * hw + (v0 + q) * 16);
    const float* wt = w + (ci * k + ko) * 16 + t0;
    #pragma GCC unroll 16
    for (int t = 0; t < 8; ++t) {
      const __m512 wb = _mm512_set1_ps(wt[t]);
      #pragma GCC unroll 16
      for (int q = 0; q < P; ++q) acc[t][q] = _mm512_fmadd_ps(wb, xv[q], acc[t][q]);
    }
  }
  #pragma GCC unroll 16
  for (int t = 0; t < 8; ++t)
    #pragma GCC unroll 16
    for (int q = 0; q < P; ++q) _mm512_storeu_ps(taps + (t0 + t) * plane + (v0 + q) * 16, acc[t][q]);
}

// acc[ci][t] (16 lanes each, in `acc`) += x[ci][pix] g_t[pix] over an image's pixel vectors,
// for CB channels from ci0 and four taps from t0.
// With `x_mask`, x is zero where x_mask is not above zero; with `x_acc`, x's sums per channel
// are accumulated there too (16 lanes each).
template <int CB>
__attribute__((target("avx512f"))) void wgrad_tile(const float* x, const float* taps,
                                                   int64_t plane, int64_t hw, int64_t vectors,
                                                   int64_t ci0, int t0, float* acc, int64_t k,
                                                   const float* x_mask, float* x_acc) {
  __m512 s[CB][4];
  __m512 xs[CB];
  #pragma GCC unroll 16
  for (int u = 0; u < CB; ++u) xs[u] = x_acc ? _mm512_loadu_ps(x_acc + (ci0 + u) * 16) : _mm512_setzero_ps();
  #pragma GCC unroll 16
  for (int u = 0; u < CB; ++u)
    #pragma GCC unroll 16
    for (int t = 0; t < 4; ++t) s[u][t] = _mm512_loadu_ps(acc + ((ci0 + u) * k * 16 + t0 + t) * 16);
  for (int64_t v = 0; v < vectors; ++v) {
    const __mmask16 mask = flat_mask(v, hw);
    __m512 gv[4];
    #pragma GCC unroll 16
    for (int t = 0; t < 4; ++t) gv[t] = _mm512_loadu_ps(taps + (t0 + t) * plane + v * 16);
    #pragma GCC unroll 16
    for (int u = 0; u < CB; ++u) {
      const int64_t at = (ci0 + u) * hw + v * 16;
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + at);
      if (x_mask) {
        const __m512 m = _mm512_maskz_loadu_ps(mask, x_mask + at);
        xv = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ), xv);
      }
      if (x_acc) xs[u] = _mm512_add_ps(xs[u], xv);
      #pragma GCC unroll 16
      for (int t = 0; t < 4; ++t) s[u][t] = _mm512_fmadd_ps(xv, gv[t], s[u][t]);
    }
  }
  #pragma GCC unroll 16
  for (int u = 0; u < CB; ++u)
    #pragma GCC unroll 16
    for (int t = 0; t < 4; ++t) _mm512_storeu_ps(acc + ((ci0 + u) * k * 16 + t0 + t) * 16, s[u][t]);
  if (x_acc) {
    #pragma GCC unroll 16
    for (int u = 0; u < CB; ++u) _mm512_storeu_ps(x_acc + (ci0 + u) * 16, xs[u]);
  }
}

}  // namespace

// Each input pixel (iy, ix) spreads x[.][iy][ix] w[.][ky][kx] to output (2 iy - 1 + ky,
// 2 ix - 1 + kx). So per output channel the layer is first 16 "tap planes", T_t = sum over ci of
// w[ci][t] x[ci] (a GEMM over the channels, 8 taps x up to 48 pixels in registers), and then
// output phase (a, b) at (m, p) is the sum of the four planes with ky = 3 - a - 2i,
// kx = 3 - b - 2j read at (m + a + i - 1, p + b + j - 1), i, j in {0, 1}: shifted masked loads
// of whole rows, the two column phases interleaved as the output rows are stored.
__attribute__((target("avx512f"))) void convt_few_k4s2_images(const float* x, const float* w,
                                                              const float* bias, float* y,
                                                              int64_t c, int64_t k, int64_t h,
                                                              int64_t wd, int64_t n0, int64_t n1,
                                                              float* scratch) {
  const int64_t hw = h * wd, vectors = few_vectors(h, wd), plane = few_plane(h, wd), ow = 2 * wd;
  float* taps = scratch + 16;  // (a vector of slack before each plane, and after)
  const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi_idx =
      _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  // per chunk of 16 columns, the lanes of the column shifts -1, 0 and 1
  std::vector<__mmask16> shifts;
  for (int64_t p0 = 0; p0 < wd; p0 += 16)
    for (int64_t d = -1; d <= 1; ++d) shifts.push_back(shift_mask(p0, d, wd));
  for (int64_t n = n0; n < n1; ++n) {
    const float* xn = x + n * c * hw;
    if (n + 1 < n1) prefetch_l2(xn + c * hw, c * hw);
    for (int64_t ko = 0; ko < k; ++ko) {
      for (int t0 = 0; t0 < 16; t0 += 8)
        for (int64_t v0 = 0; v0 < vectors; v0 += 3) {
          switch (std::min<int64_t>(3, vectors - v0)) {
            case 1: tap_tile<1>(xn, w, c, k, ko, hw, v0, t0, taps, plane); break;
            case 2: tap_tile<2>(xn, w, c, k, ko, hw, v0, t0, taps, plane); break;
            default: tap_tile<3>(xn, w, c, k, ko, hw, v0, t0, taps, plane);
          }
        }
      const __m512 b0 = _mm512_set1_ps(bias ? bias[ko] : 0.0f);
      float* yk = y + (n * k + ko) * 4 * hw;
      for (int64_t m = 0; m < h; ++m)
        for (int a = 0; a < 2; ++a)
          for (int64_t p0 = 0; p0 < wd; p0 += 16) {
            __m512 e = b0, o = b0;
            const __mmask16* sm = &shifts[3 * (p0 / 16)];
            for (int i = 0; i < 2; ++i) {
              const int64_t iy = m + a + i - 1;
              if (iy < 0 || iy >= h) continue;
              const float* row = taps + (3 - a - 2 * i) * 4 * plane + iy * wd + p0;
              // e (b = 0): kx 3 at column p - 1, kx 1 at p; o (b = 1): kx 2 at p, kx 0 at p + 1
              e = _mm512_add_ps(e, _mm512_maskz_loadu_ps(sm[0], row + 3 * plane - 1));
              e = _mm512_add_ps(e, _mm512_maskz_loadu_ps(sm[1], row + plane));
              o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(sm[1], row + 2 * plane));
              o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(sm[2], row + 1));
            }
            const int64_t cols = 2 * std::min<int64_t>(16, wd - p0);  // output columns here
            const __mmask16 lo_mask =
                static_cast<__mmask16>((1u << std::min<int64_t>(16, cols)) - 1u);
            const __mmask16 hi_mask =
                static_cast<__mmask16>((1u << std::max<int64_t>(0, cols - 16)) - 1u);
            float* dst = yk + (2 * m + a) * ow + 2 * p0;
            _mm512_mask_storeu_ps(dst, lo_mask, _mm512_permutex2var_ps(e, lo_idx, o));
            if (hi_mask) _mm512_mask_storeu_ps(dst + 16, hi_mask, _mm512_permutex2var_ps(e, hi_idx, o));
          }
    }
  }
}

// The same sums the other way: the gradient of tap (ky, kx) of channel ci is the sum over the
// input's pixels of x[ci][iy][ix] g[2 iy - 1 + ky][2 ix - 1 + kx]. Per image and output
// channel the 16 planes G_t[iy][ix] = g[2 iy - 1 + ky][2 ix - 1 + kx] (zero outside the output)
// are gathered once: lane ix of tap column kx is element 2 ix + kx of the output row padded
// with a zero in front, the even lanes of two loads. Then channels x taps accumulate the
// products over the pixel vectors (4 x 4 in registers, kept in the scratch between images).
__attribute__((target("avx512f"))) void convt_few_k4s2_wgrad_images(
    const float* x, const float* g, float* gw, float* gb, int64_t c, int64_t k, int64_t h,
    int64_t wd, int64_t n0, int64_t n1, float* scratch, const float* x_mask, float* x_sums) {
  const int64_t hw = h * wd, vectors = few_vectors(h, wd), plane = few_plane(h, wd), ow = 2 * wd;
  const int64_t chunks = (wd + 15) / 16, row_len = (chunks + 1) * 32 + 16;
  float* taps = scratch + 16;
  float* grow = scratch + 16 * plane;  // one output row: a zero, the row, zeros
  float* acc_w = grow + row_len;       // [ci][ko][tap][16]
  float* acc_b = acc_w + c * k * 256;  // [ko][16]
  float* acc_x = acc_b + k * 16;       // [ci][16]
  std::memset(acc_w, 0, sizeof(float) * (c * k * 256 + k * 16 + c * 16));
  std::memset(grow, 0, sizeof(float) * row_len);
  // What no image writes stays zero: the rows of G with no output row (iy 0 for ky 0, iy H-1
  // for ky 3) and the planes' lanes past the image.
  std::memset(scratch, 0, sizeof(float) * 16 * plane);
  const __m512i even = even_lanes();
  for (int64_t n = n0; n < n1; ++n) {
    const float* xn = x + n * c * hw;
    const float* mn = x_mask ? x_mask + n * c * hw : nullptr;
    if (n + 1 < n1) {
      prefetch_l2(xn + c * hw, c * hw);
      if (mn) prefetch_l2(mn + c * hw, c * hw);
      prefetch_l2(g + (n + 1) * k * 4 * hw, k * 4 * hw);
    }
    for (int64_t ko = 0; ko < k; ++ko) {
      const float* gk = g + (n * k + ko) * 4 * hw;
      __m512 bsum = _mm512_loadu_ps(acc_b + ko * 16);
      for (int64_t oy = 0; oy < 2 * h; ++oy) {
        std::memcpy(grow + 1, gk + oy * ow, sizeof(float) * ow);
        for (int64_t ch = 0; ch < chunks; ++ch)
          bsum = _mm512_add_ps(bsum, _mm512_add_ps(_mm512_loadu_ps(grow + 1 + 32 * ch),
                                                   _mm512_loadu_ps(grow + 17 + 32 * ch)));
        // output row oy = 2 iy - 1 + ky: the taps ky of the other parity than oy, each at one iy
        for (int ky = (oy + 1) % 2; ky < 4; ky += 2) {
          const int64_t iy = (oy + 1 - ky) / 2;
          if (iy < 0 || iy >= h) continue;
          for (int64_t ch = 0; ch < chunks; ++ch) {
            const __mmask16 mask =
                static_cast<__mmask16>((1u << std::min<int64_t>(16, wd - 16 * ch)) - 1u);
            for (int kx = 0; kx < 4; ++kx) {
              const float* src = grow + 32 * ch + kx;
              const __m512 v = _mm512_permutex2var_ps(_mm512_loadu_ps(src), even, _mm512_loadu_ps(src + 16));
              _mm512_mask_storeu_ps(taps + (ky * 4 + kx) * plane + iy * wd + 16 * ch, mask, v);
            }
          }
        }
      }
      _mm512_storeu_ps(acc_b + ko * 16, bsum);
      float* acc_k = acc_w + ko * 256;
      for (int t0 = 0; t0 < 16; t0 += 4)
        for (int64_t ci0 = 0; ci0 < c; ci0 += 4) {
          // (x's sums once per image)
          float* xa = x_sums && ko == 0 && t0 == 0 ? acc_x : nullptr;
          switch (std::min<int64_t>(4, c - ci0)) {
            case 1: wgrad_tile<1>(xn, taps, plane, hw, vectors, ci0, t0, acc_k, k, mn, xa); break;
            case 2: wgrad_tile<2>(xn, taps, plane, hw, vectors, ci0, t0, acc_k, k, mn, xa); break;
            case 3: wgrad_tile<3>(xn, taps, plane, hw, vectors, ci0, t0, acc_k, k, mn, xa); break;
            default: wgrad_tile<4>(xn, taps, plane, hw, vectors, ci0, t0, acc_k, k, mn, xa);
          }
        }
    }
  }
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ko = 0; ko < k; ++ko)
      for (int q = 0; q < 16; ++q)
        gw[(ci * k + ko) * 16 + q] +=
            _mm512_reduce_add_ps(_mm512_loadu_ps(acc_w + ((ci * k + ko) * 16 + q) * 16));
  if (gb)
    for (int64_t ko = 0; ko < k; ++ko) gb[ko] += _mm512_reduce_add_ps(_mm512_loadu_ps(acc_b + ko * 16));
  if (x_sums)
    for (int64_t ci = 0; ci < c; ++ci) x_sums[ci] += _mm512_reduce_add_ps(_mm512_loadu_ps(acc_x + ci * 16));
}

// The 4x4 convolution at stride 2, padding 1 (the downsampling layer of the conv VAE's encoder
// and DCGAN's discriminator, and the input gradient of the transposed layer above): output
// (oy, ox) reads the zero-padded input at (2 oy + ky, 2 ox + kx). The same tiles as the
// transposed kernel's, with 16 taps at stride 2 instead of four at stride 1: up to 14 output
// pixels (up to 7 of a row) times 32 output channels in 28 accumulators, one broadcast input
// value per pixel against two vectors of filters per input channel and tap. Each tile is then
// transposed 16 x 16 in registers so that an output channel's row is one masked store. Its
// filter gradient: per image and tap, U output channels x 32 input channels in registers, summed
// over the output pixels from the output's gradient transposed to channels-last (per image)
// and the same padded channels-last input.

// packed[ky][kx][ci][k] from conv2d's w (K, C, 4, 4)
void conv_k4s2_pack(const float* w, int64_t c, int64_t k, float* packed) {
  for (int t = 0; t < 16; ++t)
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t ko = 0; ko < k; ++ko) packed[(t * c + ci) * k + ko] = w[(ko * c + ci) * 16 + t];
}

// the padded input image, and its output's gradient channels-last (pixels rounded up to 16)
int64_t conv_k4s2_wgrad_scratch_size(int64_t c, int64_t k, int64_t h, int64_t w) {
  return convt_k4s2_scratch_size(c, h, w) + ((h / 2) * (w / 2) + 15) / 16 * 16 * k;
}

namespace {

// One tile of the strided convolution: output rows m .. m+R-1, pixels p0 .. p0+P-1, output
// channels k0 .. k0+31, into t[(r 8 + q) 32 + channel]; `edge` as for tile.
template <int R, int P>
__attribute__((target("avx512f"))) void down_tile(const float* xp, const float* packed,
                                                  int64_t c, int64_t k, int64_t wp2, int64_t m,
                                                  int64_t p0, int64_t k0, Edges edge, float* t) {
  __m512 acc[R][P][2];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < P; ++q) acc[r][q][0] = acc[r][q][1] = _mm512_setzero_ps();
  for (int ky = 0; ky < 4; ++ky)
    for (int kx = 0; kx < 4; ++kx) {
      const float* x[R];
      for (int r = 0; r < R; ++r) x[r] = xp + ((2 * (m + r) + ky) * wp2 + 2 * p0 + kx) * c;
      // (tap (ky, kx) reads input row 2 (m + r) + ky - 1, column 2 (p0 + q) + kx - 1: -1 for
      // the first row or pixel with tap 0, H or W for the last with tap 3, H and W even)
      edge_tap<R, P>(acc, x, packed + (ky * 4 + kx) * c * k + k0, c, k, 2 * c,
                     {edge.top && ky == 0, edge.bottom && ky == 3, edge.left && kx == 0,
                      edge.right && kx == 3});
    }
  store_tile<R, P>(acc, t);
}

using DownFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                        int64_t, Edges, float*);

DownFn pick_down(int64_t rows, int64_t p) {
  return pick_shape<DownFn>(rows, p, [](auto r, auto q) -> DownFn {
    return down_tile<decltype(r)::value, decltype(q)::value>;
  });
}

// acc[tap][ko][ci] += sum over the output pixels (i, j) of gt[i ow + j][ko] xp[2 i + ky][2 j + kx][ci]
// for U output channels from k0 and 32 input channels from c0.
template <int U>
__attribute__((target("avx512f"))) void down_wgrad_tile(const float* xp, const float* gt,
                                                        int64_t c, int64_t k, int64_t wp2,
                                                        int64_t oh, int64_t ow, int tap,
                                                        int64_t k0, int64_t c0, float* acc) {
  __m512 s[U][2];
  #pragma GCC unroll 16
  for (int u = 0; u < U; ++u) s[u][0] = s[u][1] = _mm512_setzero_ps();
  // (output pixels whose tap falls on the padding add nothing: tap 0 of a row or column reads
  // the padding at its first output, tap 3 at its last, with H and W even)
  const int ky = tap / 4, kx = tap % 4;
  const int64_t j0 = kx == 0 ? 1 : 0, j1 = kx == 3 ? ow - 1 : ow;
  for (int64_t i = ky == 0 ? 1 : 0; i < (ky == 3 ? oh - 1 : oh); ++i) {
    const float* xrow = xp + ((2 * i + ky) * wp2 + kx) * c + c0;
    const float* grow = gt + i * ow * k + k0;
    for (int64_t j = j0; j < j1; ++j) {
      const __m512 x0 = _mm512_loadu_ps(xrow + 2 * j * c), x1 = _mm512_loadu_ps(xrow + 2 * j * c + 16);
      #pragma GCC unroll 16
      for (int u = 0; u < U; ++u) {
        const __m512 gv = _mm512_set1_ps(grow[j * k + u]);
        s[u][0] = _mm512_fmadd_ps(gv, x0, s[u][0]);
        s[u][1] = _mm512_fmadd_ps(gv, x1, s[u][1]);
      }
    }
  }
  #pragma GCC unroll 16
  for (int u = 0; u < U; ++u) {
    float* a = acc + (tap * k + k0 + u) * c + c0;
    _mm512_storeu_ps(a, _mm512_add_ps(_mm512_loadu_ps(a), s[u][0]));
    _mm512_storeu_ps(a + 16, _mm512_add_ps(_mm512_loadu_ps(a + 16), s[u][1]));
  }
}

using DownWgradFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int, int64_t, int64_t, float*);

// (U of 1 to 14: K in chunks of at most 14)
DownWgradFn pick_down_wgrad(int64_t u) {
  switch (u) {
    case 1: return down_wgrad_tile<1>;
    case 2: return down_wgrad_tile<2>;
    case 3: return down_wgrad_tile<3>;
    case 4: return down_wgrad_tile<4>;
    case 5: return down_wgrad_tile<5>;
    case 6: return down_wgrad_tile<6>;
    case 7: return down_wgrad_tile<7>;
    case 8: return down_wgrad_tile<8>;
    case 9: return down_wgrad_tile<9>;
    case 10: return down_wgrad_tile<10>;
    case 11: return down_wgrad_tile<11>;
    case 12: return down_wgrad_tile<12>;
    case 13: return down_wgrad_tile<13>;
    default: return down_wgrad_tile<14>;
  }
}

}  // namespace

namespace {

// A tile t[(r 8 + q) 32 + channel] (rows m .. m+rows-1, pixels p0 .. p0+pix-1, 32 channels
// from k0) -> the output image yn (K, oh, ow): 16 x 16 transposes in registers, each output
// channel's row one masked store, with the bias and the ReLU.
__attribute__((target("avx512f"))) void store_rows(const float* t, int64_t rows, int64_t pix,
                                                   int64_t m, int64_t p0, int64_t k0,
                                                   const float* bias, bool relu, float* yn,
                                                   int64_t oh, int64_t ow) {
  const int64_t plane = oh * ow;
  const __mmask16 mask = static_cast<__mmask16>((1u << pix) - 1u);
  for (int64_t r = 0; r < rows; ++r)
    for (int half = 0; half < 2; ++half) {
      __m512 v[16];
      for (int q = 0; q < 8; ++q) v[q] = _mm512_load_ps(&t[(r * 8 + q) * 32 + 16 * half]);
      for (int q = 8; q < 16; ++q) v[q] = _mm512_setzero_ps();
      transpose16(v);
      const int64_t kk = k0 + 16 * half;
      store_channels(v, yn + kk * plane + (m + r) * ow + p0, plane, mask, bias, kk, relu);
    }
}

}  // namespace

__attribute__((target("avx512f"))) void conv_k4s2_images(const float* x, const float* packed,
                                                         const float* bias, float* y, int64_t c,
                                                         int64_t k, int64_t h, int64_t w,
                                                         int64_t n0, int64_t n1, float* scratch,
                                                         bool relu) {
  const int64_t wp2 = w + 2, oh = h / 2, ow = w / 2, plane = oh * ow;
  const int64_t pix_step = even_chunk(ow, kPix);
  const int64_t row_step = even_chunk(oh, std::min<int64_t>(kRows, kTilePix / pix_step));
  alignas(64) float t[kRows * 8 * 32] = {};  // (pixels past a tile's: read, never stored)
  for (int64_t n = n0; n < n1; ++n) {
    if (n + 1 < n1) prefetch_l2(x + (n + 1) * c * h * w, c * h * w);
    pad_channels_last(x + n * c * h * w, c, h, w, scratch);
    float* yn = y + n * k * plane;
    for (int64_t k0 = 0; k0 < k; k0 += 32)
      for (int64_t m = 0; m < oh; m += row_step) {
        const int64_t rows = std::min(row_step, oh - m);
        for (int64_t p0 = 0; p0 < ow; p0 += pix_step) {
          const int64_t pix = std::min(pix_step, ow - p0);
          const Edges edge = {m == 0, m + rows == oh, p0 == 0, p0 + pix == ow};
          pick_down(rows, pix)(scratch, packed, c, k, wp2, m, p0, k0, edge, t);
          store_rows(t, rows, pix, m, p0, k0, bias, relu, yn, oh, ow);
        }
      }
  }
}

// The strided convolution of a 14x14 input (7x7 output) by the same F(7, 2) along the rows:
// output pixel j, tap (ky, kx = px + 2 jj) reads padded column 2 (j + jj) + px, so per tap row
// and column phase px each output row is a 2-tap correlation of the 8 padded values at columns
// px, px + 2, .., px + 14. Per image the input rows are transformed once per column phase, and
// each transform point is a GEMM over the 8 (tap row, phase) pairs and the channels.
int64_t conv_k4s2_wino7_packed_size(int64_t c, int64_t k) { return 64 * c * k; }

// the padded image (16 x 16 x C) and its transformed rows (2 phases x 14 rows x 8 x C)
int64_t conv_k4s2_wino7_scratch_size(int64_t c) { return 256 * c + 2 * 14 * 8 * c; }

// packed[ky][px][t][ci][k] = sum over jj of G[t][jj] w[k][ci][ky][px + 2 jj]
void conv_k4s2_wino7_pack(const float* w, int64_t c, int64_t k, float* packed) {
  for (int ky = 0; ky < 4; ++ky)
    for (int px = 0; px < 2; ++px)
      for (int t = 0; t < 8; ++t) {
        float* dst = packed + (((ky * 2 + px) * 8 + t) * c) * k;
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t ko = 0; ko < k; ++ko) {
            const float* row = w + ((ko * c + ci) * 4 + ky) * 4;
            dst[ci * k + ko] = kWinoG[t][0] * row[px] + kWinoG[t][1] * row[px + 2];
          }
      }
}

__attribute__((target("avx512f"))) void conv_k4s2_wino7_images(const float* x,
                                                               const float* packed,
                                                               const float* bias, float* y,
                                                               int64_t c, int64_t k, int64_t n0,
                                                               int64_t n1, float* scratch,
                                                               bool relu) {
  constexpr int64_t h = 14, w = 14, wp2 = 16;
  float* xp = scratch;      // (16, 16, C)
  float* v = xp + 256 * c;  // [px][input row 0..13][t][C]
  alignas(64) float mt[8][7][32];
  alignas(64) float tb[8 * 8 * 32] = {};  // (pixels past 7: read, never stored)
  for (int64_t n = n0; n < n1; ++n) {
    if (n + 1 < n1) prefetch_l2(x + (n + 1) * c * h * w, c * h * w);
    pad_channels_last(x + n * c * h * w, c, h, w, xp);
    for (int px = 0; px < 2; ++px)
      for (int64_t iy = 0; iy < h; ++iy)
        for (int64_t c0 = 0; c0 < c; c0 += 16)
          wino_in(xp + ((iy + 1) * wp2 + px) * c + c0, 2 * c, v + (px * h + iy) * 8 * c + c0, c);
    float* yn = y + n * k * 49;
    for (int64_t k0 = 0; k0 < k; k0 += 32) {
      for (int t = 0; t < 8; ++t) {
        __m512 acc[7][1][2];
        // output row r, tap row ky reads input row 2 r + ky - 1: -1 for r = 0, ky = 0; 14 for
        // r = 6, ky = 3 (those rows are left out); tap = 2 ky + px
        wino_point<8>(
            acc, c, k,
            [&](int tap, int r) {
              const int64_t iy = std::max<int64_t>(0, std::min<int64_t>(h - 1, 2 * r + tap / 2 - 1));
              return v + (((tap % 2) * h + iy) * 8 + t) * c;
            },
            [&](int tap) { return packed + ((tap * 8 + t) * c) * k + k0; },
            [&](int tap) { return Edges{tap / 2 == 0, tap / 2 == 3, false, false}; });
        for (int r = 0; r < 7; ++r) {
          _mm512_store_ps(&mt[t][r][0], acc[r][0][0]);
          _mm512_store_ps(&mt[t][r][16], acc[r][0][1]);
        }
      }
      wino_out(mt, tb);
      store_rows(tb, 7, 7, 0, 0, k0, bias, relu, yn, 7, 7);
    }
  }
}

__attribute__((target("avx512f"))) void conv_k4s2_wgrad_images(
    const float* x, const float* g, float* acc, float* g_sums, float* x_sums, int64_t c,
    int64_t k, int64_t h, int64_t w, int64_t n0, int64_t n1, float* scratch) {
  const int64_t wp2 = w + 2, oh = h / 2, ow = w / 2, plane = oh * ow;
  float* gt = scratch + convt_k4s2_scratch_size(c, h, w);
  const int64_t u_step = even_chunk(k, 14);
  const DownWgradFn full = pick_down_wgrad(u_step), last = pick_down_wgrad(k - (k - 1) / u_step * u_step);
  for (int64_t n = n0; n < n1; ++n) {
    if (n + 1 < n1) prefetch_l2(x + (n + 1) * c * h * w, c * h * w);
    pad_channels_last(x + n * c * h * w, c, h, w, scratch);
    // the output's gradient (K, plane) -> gt (plane, K), 16 x 16 blocks in registers
    const float* gn = g + n * k * plane;
    if (n + 1 < n1) prefetch_l2(gn + k * plane, k * plane);
    for (int64_t k0 = 0; k0 < k; k0 += 16) {
      __m512 sum = _mm512_setzero_ps();
      for (int64_t p0 = 0; p0 < plane; p0 += 16) {
        const int64_t pix = std::min<int64_t>(16, plane - p0);
        const __mmask16 mask = static_cast<__mmask16>((1u << pix) - 1u);
        __m512 v[16];
        for (int s = 0; s < 16; ++s) v[s] = _mm512_maskz_loadu_ps(mask, gn + (k0 + s) * plane + p0);
        transpose16(v);
        for (int64_t q = 0; q < pix; ++q) {
          _mm512_storeu_ps(gt + (p0 + q) * k + k0, v[q]);
          sum = _mm512_add_ps(sum, v[q]);
        }
      }
      if (g_sums) _mm512_storeu_ps(g_sums + k0, _mm512_add_ps(_mm512_loadu_ps(g_sums + k0), sum));
    }
    if (x_sums)
      for (int64_t c0 = 0; c0 < c; c0 += 16) {
        __m512 sum = _mm512_setzero_ps();
        for (int64_t iy = 1; iy <= h; ++iy)
          for (int64_t ix = 1; ix <= w; ++ix) sum = _mm512_add_ps(sum, _mm512_loadu_ps(scratch + (iy * wp2 + ix) * c + c0));
        _mm512_storeu_ps(x_sums + c0, _mm512_add_ps(_mm512_loadu_ps(x_sums + c0), sum));
      }
    for (int tap = 0; tap < 16; ++tap)
      for (int64_t k0 = 0; k0 < k; k0 += u_step) {
        const DownWgradFn f = k0 + u_step >= k ? last : full;
        for (int64_t c0 = 0; c0 < c; c0 += 32) f(scratch, gt, c, k, wp2, oh, ow, tap, k0, c0, acc);
      }
  }
}

#else

bool convt_k4s2_available() { return false; }

void conv1_k4s2_images(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t,
                       int64_t, int64_t, float*, bool) {}

void convt_k4s2_images(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, float*, bool) {}

void convt_few_k4s2_images(const float*, const float*, const float*, float*, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int64_t, float*) {}

void convt_few_k4s2_wgrad_images(const float*, const float*, float*, float*, int64_t, int64_t,
                                 int64_t, int64_t, int64_t, int64_t, float*, const float*, float*) {}

void conv_k4s2_images(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t,
                      int64_t, int64_t, int64_t, float*, bool) {}

void convt_k4s2_wino7_images(const float*, const float*, const float*, float*, int64_t, int64_t,
                             int64_t, int64_t, float*, bool) {}

// (callers check convt_k4s2_available first: never reached)
void conv_k4s2_pack(const float*, int64_t, int64_t, float*) {}
int64_t conv_k4s2_wgrad_scratch_size(int64_t, int64_t, int64_t, int64_t) { return 0; }
void convt_k4s2_wino7_pack(const float*, int64_t, int64_t, float*) {}
int64_t convt_k4s2_wino7_packed_size(int64_t, int64_t) { return 0; }
int64_t convt_k4s2_wino7_scratch_size(int64_t) { return 0; }
void conv_k4s2_wino7_pack(const float*, int64_t, int64_t, float*) {}
int64_t conv_k4s2_wino7_packed_size(int64_t, int64_t) { return 0; }
int64_t conv_k4s2_wino7_scratch_size(int64_t) { return 0; }
void conv_k4s2_wino7_images(const float*, const float*, const float*, float*, int64_t, int64_t,
                            int64_t, int64_t, float*, bool) {}

void conv_k4s2_wgrad_images(const float*, const float*, float*, float*, float*, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int64_t, float*) {}

#endif

}  // namespace zoo
