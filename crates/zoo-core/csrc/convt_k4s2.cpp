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
// innermost (16 x 16 in-register transposes). A tile is up to 14 pixels of one phase (up to 7 of a row, in up to 4 rows: 2 x 7
// for the VAE's 7x7 input) times 32 output channels, 28 AVX-512 accumulators, fed by one
// broadcast input value per pixel against two vectors of filters per input channel and tap. The
// tiles of both column phases of a row are then transposed 16 x 16 in registers so that each
// output channel's row of up to 14 pixels is one (masked) store, with the bias added.
#include "convt_k4s2.h"

#include <algorithm>
#include <cstring>

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

// A tile's pixels per row (at most kPix) times rows (at most kRows) is at most kTilePix: two
// accumulators each, 28 of the 32 vector registers, the rest for the filters and the broadcast.
constexpr int kPix = 7, kRows = 4, kTilePix = 14;

// One tile: rows m .. m+R-1, pixels p0 .. p0+P-1 of phase (a, b), output channels k0 .. k0+31,
// into t[(r 8 + q) 32 + channel].
template <int R, int P>
__attribute__((target("avx512f"))) void tile(const float* xp, const float* packed, int64_t c,
                                             int64_t k, int64_t wp2, int64_t m, int64_t p0, int a,
                                             int b, int64_t k0, float* t) {
  __m512 acc[R][P][2];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < P; ++q) acc[r][q][0] = acc[r][q][1] = _mm512_setzero_ps();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      const float* f = packed + ((((a * 2 + b) * 2 + i) * 2 + j) * c) * k + k0;
      const float* x[R];
      for (int r = 0; r < R; ++r) x[r] = xp + ((m + r + a + i) * wp2 + (p0 + b + j)) * c;
      for (int64_t ci = 0; ci < c; ++ci) {
        const __m512 f0 = _mm512_loadu_ps(f + ci * k), f1 = _mm512_loadu_ps(f + ci * k + 16);
        for (int r = 0; r < R; ++r)
          for (int q = 0; q < P; ++q) {
            const __m512 xv = _mm512_set1_ps(x[r][q * c + ci]);
            acc[r][q][0] = _mm512_fmadd_ps(xv, f0, acc[r][q][0]);
            acc[r][q][1] = _mm512_fmadd_ps(xv, f1, acc[r][q][1]);
          }
      }
    }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < P; ++q) {
      _mm512_store_ps(t + (r * 8 + q) * 32, acc[r][q][0]);
      _mm512_store_ps(t + (r * 8 + q) * 32 + 16, acc[r][q][1]);
    }
}

using TileFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                        int, int, int64_t, float*);

template <int R>
TileFn pick_pixels(int64_t p) {
  switch (p) {
    case 1: return tile<R, 1>;
    case 2: return tile<R, 2>;
    case 3: return tile<R, 3>;
    case 4: return tile<R, 4>;
    case 5: return tile<R, 5>;
    case 6: return tile<R, 6>;
    default: return tile<R, 7>;
  }
}

TileFn pick(int64_t rows, int64_t p) {
  switch (rows) {
    case 1: return pick_pixels<1>(p);
    case 2: return pick_pixels<2>(p);
    case 3: return pick_pixels<3>(p);
    default: return pick_pixels<4>(p);
  }
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

__attribute__((target("avx512f"))) void convt_k4s2_images(const float* x, const float* packed,
                                                          const float* bias, float* y, int64_t c,
                                                          int64_t k, int64_t h, int64_t w,
                                                          int64_t n0, int64_t n1, float* scratch) {
  const int64_t wp2 = w + 2, oh = 2 * h, ow = 2 * w, plane = oh * ow;
  // tiles: pixel rows as even as can be, then as many rows as the registers take
  const int64_t pix_step = even_chunk(w, kPix);
  const int64_t row_step = even_chunk(h, std::min<int64_t>(kRows, kTilePix / pix_step));
  alignas(64) float t[2][kRows * 8 * 32] = {};  // (pixels past a tile's: read, never stored)
  for (int64_t n = n0; n < n1; ++n) {
    pad_channels_last(x + n * c * h * w, c, h, w, scratch);
    float* yn = y + n * k * plane;
    for (int64_t k0 = 0; k0 < k; k0 += 32)
      for (int a = 0; a < 2; ++a)
        for (int64_t m = 0; m < h; m += row_step) {
          const int64_t rows = std::min(row_step, h - m);
          for (int64_t p0 = 0; p0 < w; p0 += pix_step) {
            const int64_t pix = std::min(pix_step, w - p0);
            const TileFn f = pick(rows, pix);
            for (int b = 0; b < 2; ++b) f(scratch, packed, c, k, wp2, m, p0, a, b, k0, t[b]);
            // output columns 2 p0 .. 2 (p0 + pix) - 1 alternate between the two column phases
            const __mmask16 mask = static_cast<__mmask16>((1u << (2 * pix)) - 1u);
            for (int64_t r = 0; r < rows; ++r)
              for (int half = 0; half < 2; ++half) {
                __m512 v[16];
                for (int q = 0; q < 8; ++q)
                  for (int b = 0; b < 2; ++b)
                    v[2 * q + b] = _mm512_load_ps(&t[b][(r * 8 + q) * 32 + 16 * half]);
                transpose16(v);
                const int64_t kk = k0 + 16 * half;
                float* dst = yn + kk * plane + (2 * (m + r) + a) * ow + 2 * p0;
                for (int s = 0; s < 16; ++s) {
                  const __m512 out = bias ? _mm512_add_ps(v[s], _mm512_set1_ps(bias[kk + s])) : v[s];
                  _mm512_mask_storeu_ps(dst + s * plane, mask, out);
                }
              }
          }
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
                                                          int64_t n1, float* scratch) {
  const int64_t oh = h / 2, ow = wd / 2, stride = wd + 34;
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  std::memset(scratch, 0, sizeof(float) * conv1_k4s2_scratch_size(h, wd));
  for (int64_t n = n0; n < n1; ++n) {
    const float* xn = x + n * h * wd;
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
          for (int u = 0; u < 4; ++u)
            _mm512_mask_storeu_ps(yn + ((c + u) * oh + oy) * ow + ox0, mask, acc[u]);
        }
      }
  }
}

#else

bool convt_k4s2_available() { return false; }

void conv1_k4s2_images(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t,
                       int64_t, int64_t, float*) {}

void convt_k4s2_images(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, float*) {}

#endif

}  // namespace zoo
