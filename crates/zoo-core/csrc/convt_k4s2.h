// The 4x4 transposed convolution at stride 2, padding 1 (the upsampling layer of DCGAN and of
// the conv VAE's decoder, and the input gradient of their 4x4 stride-2 convolutions), float32,
// NCHW in and out. See convt_k4s2.cpp.
#pragma once
#include <cstdint>

namespace zoo {

// Whether this CPU runs the kernel (x86-64 with AVX-512F); otherwise callers use libtorch's.
bool convt_k4s2_available();

// Output channels per block of the kernel: K must be a multiple of it.
constexpr int64_t kConvtK4s2Block = 32;

// Floats of the repacked filters (convt_k4s2_pack) and of one image's scratch.
int64_t convt_k4s2_packed_size(int64_t c, int64_t k);
int64_t convt_k4s2_scratch_size(int64_t c, int64_t h, int64_t w);

// w (C, K, 4, 4) as conv_transpose2d stores it -> the kernel's layout.
void convt_k4s2_pack(const float* w, int64_t c, int64_t k, float* packed);

// Images [n0, n1) of y (N, K, 2H, 2W) = conv_transpose2d(x (N, C, H, W), w, b, stride 2,
// padding 1), from the packed filters; b of K values or null; `scratch` holds
// convt_k4s2_scratch_size floats. Touches only those images, so disjoint ranges can run on
// different threads (each with its own scratch).
// With `relu`, max(y, 0) instead (the layer and its activation in one pass).
void convt_k4s2_images(const float* x, const float* packed, const float* b, float* y, int64_t c,
                       int64_t k, int64_t h, int64_t w, int64_t n0, int64_t n1, float* scratch,
                       bool relu);

// The same transposed convolution for a 7x7 input (C a multiple of 16), by Winograd F(7, 2)
// along the rows: its own packed filters (convt_k4s2_wino7_pack, ..._packed_size floats) and
// scratch (..._scratch_size floats); y (N, K, 14, 14).
int64_t convt_k4s2_wino7_packed_size(int64_t c, int64_t k);
int64_t convt_k4s2_wino7_scratch_size(int64_t c);
void convt_k4s2_wino7_pack(const float* w, int64_t c, int64_t k, float* packed);
void convt_k4s2_wino7_images(const float* x, const float* packed, const float* b, float* y,
                             int64_t c, int64_t k, int64_t n0, int64_t n1, float* scratch,
                             bool relu);

// Images [n0, n1) of y (N, K, H/2, W/2) = conv2d(x (N, 1, H, W), w (K, 1, 4, 4), b, stride 2,
// padding 1) for a single input channel (a grey image's first layer; also the input gradient
// of a transposed convolution to one channel, the same operation): H and W even, K a multiple
// of 4, b of K values or null; `scratch` holds conv1_k4s2_scratch_size floats; with `relu`,
// max(y, 0).
int64_t conv1_k4s2_scratch_size(int64_t h, int64_t w);
void conv1_k4s2_images(const float* x, const float* w, const float* b, float* y, int64_t k,
                       int64_t h, int64_t wd, int64_t n0, int64_t n1, float* scratch, bool relu);

// The transposed convolution of the same shape to few output channels (K of 1 to 4: an image
// decoder's last layer), w (C, K, 4, 4) as stored. Images [n0, n1) of
// y (N, K, 2H, 2W) = conv_transpose2d(x (N, C, H, W), w, b, stride 2, padding 1); b of K values
// or null; `scratch` holds convt_few_k4s2_scratch_size floats.
int64_t convt_few_k4s2_scratch_size(int64_t c, int64_t h, int64_t w);
void convt_few_k4s2_images(const float* x, const float* w, const float* b, float* y, int64_t c,
                           int64_t k, int64_t h, int64_t wd, int64_t n0, int64_t n1,
                           float* scratch);

// That layer's filter and bias gradients over images [n0, n1), from its input x (N, C, H, W)
// and its output's gradient g (N, K, 2H, 2W): added to gw (C, K, 4, 4) and to gb (K; null: not
// wanted). With `x_mask` (like x), x counts as zero where x_mask is not above zero, and
// `x_sums` (C; null: not wanted) gets the sums of each channel of x added. `scratch` holds
// convt_few_k4s2_wgrad_scratch_size floats. (The same sums give the filters of a
// single-channel 4x4 stride-2 convolution, with its output's gradient as x and its image as g;
// x_mask is then a ReLU's output after it, and x_sums its bias's gradient.)
int64_t convt_few_k4s2_wgrad_scratch_size(int64_t c, int64_t k, int64_t h, int64_t w);
void convt_few_k4s2_wgrad_images(const float* x, const float* g, float* gw, float* gb, int64_t c,
                                 int64_t k, int64_t h, int64_t wd, int64_t n0, int64_t n1,
                                 float* scratch, const float* x_mask, float* x_sums);

// The 4x4 convolution at stride 2, padding 1 (y (N, K, H/2, W/2) = conv2d(x (N, C, H, W), w
// (K, C, 4, 4), b, stride 2, padding 1), H and W even, K a multiple of kConvtK4s2Block):
// conv_k4s2_pack repacks w (convt_k4s2_packed_size floats), then images [n0, n1) as for
// convt_k4s2_images (`scratch`: convt_k4s2_scratch_size floats; b of K values or null; with
// `relu`, max(y, 0)). It is also the input gradient of conv_transpose2d at 4x4 stride 2, with
// that layer's (C', K', 4, 4) filters read as (K, C, 4, 4).
void conv_k4s2_pack(const float* w, int64_t c, int64_t k, float* packed);
void conv_k4s2_images(const float* x, const float* packed, const float* b, float* y, int64_t c,
                      int64_t k, int64_t h, int64_t w, int64_t n0, int64_t n1, float* scratch,
                      bool relu);

// The same convolution of a 14x14 input (C a multiple of 16) by Winograd F(7, 2) along the
// rows, with its own packed filters and scratch; y (N, K, 7, 7).
int64_t conv_k4s2_wino7_packed_size(int64_t c, int64_t k);
int64_t conv_k4s2_wino7_scratch_size(int64_t c);
void conv_k4s2_wino7_pack(const float* w, int64_t c, int64_t k, float* packed);
void conv_k4s2_wino7_images(const float* x, const float* packed, const float* b, float* y,
                            int64_t c, int64_t k, int64_t n0, int64_t n1, float* scratch,
                            bool relu);

// Its filter gradient over images [n0, n1) from x and the output's gradient g (N, K, H/2, W/2),
// C a multiple of 32 and K of 16: added to `acc` (16 taps, K, C: tap-major, not conv2d's
// layout); the sums of g's channels to g_sums (K) and of x's to x_sums (C) unless null.
// `scratch` holds conv_k4s2_wgrad_scratch_size floats. (With the output's gradient of a 4x4
// stride-2 transposed convolution as x and its input as g, the same sums are that layer's
// filter gradient in conv_transpose2d's (C', K', 4, 4) layout, and x_sums its bias's.)
int64_t conv_k4s2_wgrad_scratch_size(int64_t c, int64_t k, int64_t h, int64_t w);
void conv_k4s2_wgrad_images(const float* x, const float* g, float* acc, float* g_sums,
                            float* x_sums, int64_t c, int64_t k, int64_t h, int64_t w, int64_t n0,
                            int64_t n1, float* scratch);

}  // namespace zoo
