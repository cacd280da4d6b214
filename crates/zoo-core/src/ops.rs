//! libtorch operators that tch does not wrap, or wraps without an argument we need, through
//! the C++ of csrc/ops.cpp (compiled by build.rs against the same libtorch).
//!
//! `ZOO_KERNELS=libtorch` in the environment (read once, at the first call) routes every
//! operator here to libtorch's own (`conv2d`, `conv_transpose2d`, `conv1d`, `linear`, ...),
//! bypassing zoo's kernels: to rule them out when a result looks wrong, or to compare speed.
//! `zoo info` says which is in use.
use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

use tch::Tensor;

use crate::{Error, Result};

extern "C" {
    fn zoo_fused_adamw(
        params: *const *const c_void,
        grads: *const *const c_void,
        exp_avgs: *const *const c_void,
        exp_avg_sqs: *const *const c_void,
        steps: *const *const c_void,
        n: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn zoo_leaky_relu(x: *const c_void, slope: f64, err: *mut c_char, err_len: usize) -> *mut c_void;
    fn zoo_linear(
        x: *const c_void,
        w: *const c_void,
        b: *const c_void,
        transposed: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn zoo_gemv_available() -> i32;
    fn zoo_linear_is_dnnl(x: *const c_void, w: *const c_void, b: *const c_void, transposed: i32) -> i32;
    fn zoo_conv_transpose2d(
        x: *const c_void,
        w: *const c_void,
        b: *const c_void,
        sh: i64,
        sw: i64,
        ph: i64,
        pw: i64,
        relu: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn zoo_few_channel_path(x: *const c_void, w: *const c_void, b: *const c_void, transposed: i32) -> i32;
    fn zoo_k4s2_path(
        x: *const c_void,
        w: *const c_void,
        b: *const c_void,
        transposed: i32,
        sh: i64,
        sw: i64,
        ph: i64,
        pw: i64,
    ) -> i32;
    fn zoo_conv_k4s2_path(
        x: *const c_void,
        w: *const c_void,
        b: *const c_void,
        sh: i64,
        sw: i64,
        ph: i64,
        pw: i64,
    ) -> i32;
    fn zoo_tune_malloc(mmap_threshold: i64, trim_threshold: i64) -> i32;
    fn zoo_clear_grad(t: *const c_void);
    fn zoo_to_layout(x: *const c_void, channels_last: i32, err: *mut c_char, err_len: usize) -> *mut c_void;
    fn zoo_conv1d(
        x: *const c_void,
        w: *const c_void,
        b: *const c_void,
        pad: i64,
        dilation: i64,
        add: *const c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn zoo_conv2d_winograd(
        x: *const c_void,
        w: *const c_void,
        b: *const c_void,
        sh: i64,
        sw: i64,
        ph: i64,
        pw: i64,
    ) -> i32;
    fn zoo_conv2d(
        x: *const c_void,
        w: *const c_void,
        b: *const c_void,
        sh: i64,
        sw: i64,
        ph: i64,
        pw: i64,
        relu: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
}

/// The first line of the C++ exception message the shim wrote into `err`.
fn torch_error(what: &str, err: &[u8]) -> Error {
    let msg = CStr::from_bytes_until_nul(err).map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
    Error::Torch(tch::TchError::Torch(format!("{what}: {}", msg.lines().next().unwrap_or(""))))
}

/// Calls a shim function that returns a new at::Tensor, or null with its error message written
/// into the buffer it is given; `what` names the operation in the error.
///
/// # Safety
/// `call` must pass only live tensors to the shim and return what it returned: null or a new
/// at::Tensor whose ownership passes to the returned tch Tensor (freed by its Drop).
unsafe fn shim_tensor(what: &str, call: impl FnOnce(*mut c_char, usize) -> *mut c_void) -> Result<Tensor> {
    let mut err = [0u8; 512];
    let out = call(err.as_mut_ptr() as *mut c_char, err.len());
    if out.is_null() {
        return Err(torch_error(what, &err));
    }
    Ok(Tensor::from_ptr(out as *mut torch_sys::C_tensor))
}

/// A tensor argument for the shim, or null.
fn ptr(t: Option<&Tensor>) -> *const c_void {
    t.map_or(std::ptr::null(), |t| t.as_ptr() as *const c_void)
}

/// Whether `ZOO_KERNELS=libtorch` turned zoo's own kernels off (see the module docs).
pub fn libtorch_only() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var("ZOO_KERNELS").is_ok_and(|v| v.trim().eq_ignore_ascii_case("libtorch")))
}

/// Leaky ReLU with slope `slope` for x < 0 (`torch.nn.functional.leaky_relu`), differentiable.
/// Shapes: any -> the same.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if libtorch_only() {
        return Ok(x.f_where_self(&x.f_gt(0.0)?, &x.f_mul_scalar(slope)?)?);
    }
    // SAFETY: x is a live tensor for the call.
    unsafe { shim_tensor("leaky_relu", |err, len| zoo_leaky_relu(ptr(Some(x)), slope, err, len)) }
}

/// A linear layer, x W^T + b (`torch.nn.functional.linear`). Shapes: x (..., K), w (N, K),
/// b (N) -> (..., N).
///
/// Decoding runs linear layers on one token: a matrix-vector product whose speed is the speed
/// at which W streams from memory. For float32 on the CPU with at most 4 rows of x and nothing
/// for autograd to record, this uses csrc/gemv.cpp's AVX-512 kernel, which reads W about 1.5x
/// faster than libtorch's MKL sgemv on this machine (docs/benchmarks.md). Training-sized
/// products (float32 on the CPU, 32 or more rows of x and at least 2^20 multiply-adds) run as
/// oneDNN's matmul, forward and backward, which beats MKL's sgemm by 5-20% here; a backward
/// that builds a graph (gradient penalties) is libtorch's. Everything else (small products,
/// other dtypes and devices) is libtorch's linear.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    call_linear(x, w, b, false)
}

/// [`linear`] for a weight stored (K, N), the transpose of torch's (GPT-2's `Conv1D`): b + x W
/// as one `addmm`, for one row of x csrc/gemv.cpp's kernel for that layout, and oneDNN's
/// matmul where [`linear`] takes it. Shapes: x (..., K), w (K, N), b (N) -> (..., N).
pub fn linear_t(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    call_linear(x, w, b, true)
}

/// Whether [`linear`] (or [`linear_t`] when `transposed`) runs as oneDNN's matmul; the tests
/// ask it.
pub fn is_dnnl_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, transposed: bool) -> bool {
    if libtorch_only() {
        return false;
    }
    // SAFETY: x, w and b are live tensors for the call; nothing is kept.
    unsafe { zoo_linear_is_dnnl(ptr(Some(x)), ptr(Some(w)), ptr(b), i32::from(transposed)) != 0 }
}

fn call_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, transposed: bool) -> Result<Tensor> {
    if libtorch_only() {
        return Ok(if transposed {
            let y = x.f_matmul(w)?;
            match b {
                Some(b) => y.f_add(b)?,
                None => y,
            }
        } else {
            x.f_linear(w, b)?
        });
    }
    // SAFETY: x, w and b are live tensors for the call.
    unsafe {
        shim_tensor("linear", |err, len| {
            zoo_linear(ptr(Some(x)), ptr(Some(w)), ptr(b), i32::from(transposed), err, len)
        })
    }
}

/// A 2-D convolution without groups or dilation (`torch.nn.functional.conv2d`), differentiable.
/// Shapes: x (N, C, H, W), w (K, C, k, k), b (K) -> (N, K, H', W').
///
/// 3x3 filters at stride 1 (a UNet's and a VAE's convolutions), float32 on the CPU, with enough
/// channels (C K >= 32 (C + K), e.g. 64 in and out) and enough output (16 tiles of 4x4; 64 when
/// a gradient is needed) run
/// as Winograd F(4x4, 3x3) (csrc/wino.cpp): 4x fewer multiplies in the GEMMs than the direct
/// convolution libtorch runs, for transforms that cost little next to them
/// (docs/benchmarks.md). Both gradients are Winograd too; a backward that builds a graph
/// (gradient penalties) is libtorch's.
///
/// With at most 4 input channels (an image's first layer) and 16 or more output channels, the
/// input's gradient, when one is needed, is the transposed convolution of
/// [`conv_transpose2d`]'s GEMM path instead of oneDNN's (DCGAN's discriminator in the
/// generator's step). So does a 4x4 stride-2 convolution with padding 1 (DCGAN's and the conv
/// VAE's downsampling layers; NCHW input with even sides, a multiple of 32 input channels, 16 or
/// more output channels, at most 16384 of both multiplied, AVX-512): its input's gradient is
/// [`conv_transpose2d`]'s 4x4 stride-2 kernel. A single input channel at 4x4 stride 2 with
/// padding 1 (a grey image's first layer: even sides, a multiple of 4 outputs, AVX-512) runs
/// its forward as 16 taps gathered per row of 16 outputs and broadcast against the filters
/// (csrc/convt_k4s2.cpp), and its filters' gradient as [`conv_transpose2d`]'s few-output
/// kernel's with the roles swapped. Everything else is libtorch's conv2d.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
) -> Result<Tensor> {
    call_conv(false, x, w, b, stride, padding, false)
}

/// `relu(conv2d(x, w, b, stride, padding))`, with the ReLU fused into the layer where zoo's
/// single-channel kernel runs it (a grey image's first layer: the kernel stores the activation,
/// and the filters' gradient masks the output's gradient as it reads it).
pub fn conv2d_relu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
) -> Result<Tensor> {
    call_conv(false, x, w, b, stride, padding, true)
}

/// A 2-D transposed convolution without groups, dilation or output padding
/// (`torch.nn.functional.conv_transpose2d`), differentiable. Shapes: x (N, C, H, W),
/// w (C, K, kh, kw), b (K) -> (N, K, (H - 1) sh - 2 ph + kh, ...).
///
/// With at most 4 output channels (an image's last layer) and 16 or more input channels,
/// float32 on the CPU, the forward is one batched GEMM (W^T X per image) and a scatter of the
/// columns into the image (csrc/ops.cpp `gemm_convt`), where oneDNN's deconvolution runs such
/// layers several times slower than its other convolutions (docs/benchmarks.md). At 4x4
/// stride 2 with padding 1 and an NCHW input (the conv VAE's and beta-VAE's last layers;
/// AVX-512) the forward and the filters' and bias's gradients are csrc/convt_k4s2.cpp's
/// few-output kernels instead: 16 tap planes per output channel (a GEMM over the input
/// channels) summed into the four output phases by shifted loads, and the same sums the other
/// way for the filters.
///
/// The 4x4 stride-2 upsampling layer with padding 1 (NCHW input, 16 or more input channels, a
/// multiple of 32 output channels, at most 16384 of both multiplied, float32 on a CPU with
/// AVX-512) runs as four 2x2
/// convolutions, one per output phase (csrc/convt_k4s2.cpp), where oneDNN's kernel for it runs
/// at two thirds of its forward convolutions' speed and its result needs a copy to NCHW. The
/// gradients are libtorch's, except the input's gradient of a layer to one channel at 4x4
/// stride 2 (a grey image's last layer), which is [`conv2d`]'s single-channel kernel, and the
/// few-output filters' gradient above. Everything else is libtorch's conv_transpose2d.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
) -> Result<Tensor> {
    call_conv(true, x, w, b, stride, padding, false)
}

/// `relu(conv_transpose2d(x, w, b, stride, padding))`, with the ReLU fused into the stores of
/// the 4x4 stride-2 kernel where it runs the layer.
pub fn conv_transpose2d_relu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
) -> Result<Tensor> {
    call_conv(true, x, w, b, stride, padding, true)
}

/// Whether [`conv_transpose2d`] (`transposed`) or [`conv2d`]'s input gradient (in the current
/// grad mode) takes the few-channel GEMM path; the tests ask it.
pub fn is_few_channel_path(x: &Tensor, w: &Tensor, b: Option<&Tensor>, transposed: bool) -> bool {
    if libtorch_only() {
        return false;
    }
    // SAFETY: x, w and b are live tensors for the call; nothing is kept.
    unsafe { zoo_few_channel_path(ptr(Some(x)), ptr(Some(w)), ptr(b), i32::from(transposed)) != 0 }
}

/// Whether [`conv_transpose2d`] (`transposed`) or [`conv2d`]'s input gradient (in the current
/// grad mode) runs as the 4x4 stride-2 transposed-convolution kernel; the tests ask it.
pub fn is_k4s2_path(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    transposed: bool,
    stride: [i64; 2],
    padding: [i64; 2],
) -> bool {
    if libtorch_only() {
        return false;
    }
    // SAFETY: x, w and b are live tensors for the call; nothing is kept.
    unsafe {
        zoo_k4s2_path(
            ptr(Some(x)),
            ptr(Some(w)),
            ptr(b),
            i32::from(transposed),
            stride[0],
            stride[1],
            padding[0],
            padding[1],
        ) != 0
    }
}

/// Whether [`conv2d`] runs its forward and its filters' gradient as the 4x4 stride-2
/// convolution kernel (so does the backward of a 4x4 stride-2 [`conv_transpose2d`] whose
/// output's gradient and filters are `x` and `w` here); the tests ask it.
pub fn is_conv_k4s2_path(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
) -> bool {
    ask_conv_path(zoo_conv_k4s2_path, x, w, b, stride, padding)
}

/// The shim's questions about which path a convolution takes: (x, w, b, stride, padding).
type ConvPathQuery =
    unsafe extern "C" fn(*const c_void, *const c_void, *const c_void, i64, i64, i64, i64) -> i32;

fn ask_conv_path(
    query: ConvPathQuery,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
) -> bool {
    if libtorch_only() {
        return false;
    }
    // SAFETY: x, w and b are live tensors for the call; nothing is kept.
    unsafe { query(ptr(Some(x)), ptr(Some(w)), ptr(b), stride[0], stride[1], padding[0], padding[1]) != 0 }
}

/// The shim's 2-D convolutions share one signature: (x, w, b, stride, padding, relu, error
/// buffer).
type ShimConv = unsafe extern "C" fn(
    *const c_void,
    *const c_void,
    *const c_void,
    i64,
    i64,
    i64,
    i64,
    i32,
    *mut c_char,
    usize,
) -> *mut c_void;

/// The shim's conv_transpose2d (`transposed`) or conv2d, with `relu`: relu of it.
fn call_conv(
    transposed: bool,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
    relu: bool,
) -> Result<Tensor> {
    if libtorch_only() {
        let y = if transposed {
            x.f_conv_transpose2d(w, b, stride, padding, [0, 0], 1, [1, 1])?
        } else {
            x.f_conv2d(w, b, stride, padding, [1, 1], 1)?
        };
        return Ok(if relu { y.f_relu()? } else { y });
    }
    let (what, f): (&str, ShimConv) =
        if transposed { ("conv_transpose2d", zoo_conv_transpose2d) } else { ("conv2d", zoo_conv2d) };
    let relu = i32::from(relu);
    // SAFETY: x, w and b are live tensors for the call; f is one of the shim's convolutions.
    unsafe {
        shim_tensor(what, |err, len| {
            f(
                ptr(Some(x)),
                ptr(Some(w)),
                ptr(b),
                stride[0],
                stride[1],
                padding[0],
                padding[1],
                relu,
                err,
                len,
            )
        })
    }
}

/// Whether [`conv2d`] with these arguments runs as Winograd (in the current grad mode); the
/// tests ask it so that they check the path they mean to.
pub fn conv2d_is_winograd(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
) -> bool {
    ask_conv_path(zoo_conv2d_winograd, x, w, b, stride, padding)
}

/// A 1-D convolution at stride 1 without groups (`torch.nn.functional.conv1d`), differentiable.
/// Shapes: x (N, C, T), w (K, C, k), b (K) -> (N, K, T').
///
/// Dilated kernel-3 filters with "same" padding (padding = dilation, WaveGlow's WN layers),
/// float32 on the CPU, at least 16 channels each way and 64 tiles of 4 outputs, with nothing
/// for autograd to record (vocoding), run as Winograd F(4, 3) on each residue's subsequence
/// (csrc/wino.cpp): half the multiplies of the direct convolution. Everything else is
/// libtorch's conv1d.
pub fn conv1d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, padding: i64, dilation: i64) -> Result<Tensor> {
    conv1d_add(x, w, b, padding, dilation, None)
}

/// [`conv1d`] plus `add` (the output's shape, any strides with a contiguous last dimension),
/// which the Winograd path adds as it writes the output instead of in a pass of its own
/// (WaveGlow's WN: a layer's conditioning slice).
pub fn conv1d_add(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: i64,
    dilation: i64,
    add: Option<&Tensor>,
) -> Result<Tensor> {
    if libtorch_only() {
        let y = x.f_conv1d(w, b, [1], [padding], [dilation], 1)?;
        return Ok(match add {
            Some(a) => y.f_add(a)?,
            None => y,
        });
    }
    // SAFETY: x, w, b and add are live tensors for the call.
    unsafe {
        shim_tensor("conv1d", |err, len| {
            zoo_conv1d(ptr(Some(x)), ptr(Some(w)), ptr(b), padding, dilation, ptr(add), err, len)
        })
    }
}

/// Whether [`linear`] has its own matrix-vector kernel on this CPU (x86-64 with AVX-512F) and
/// `ZOO_KERNELS=libtorch` did not turn it off.
pub fn gemv_available() -> bool {
    if libtorch_only() {
        return false;
    }
    // SAFETY: no arguments; reads CPU features.
    unsafe { zoo_gemv_available() != 0 }
}

/// Lets the process reuse freed tensor memory instead of taking fresh pages from the kernel.
///
/// libtorch allocates every CPU tensor with malloc. glibc maps blocks above a threshold (128 KiB
/// at start, growing to at most 32 MiB) with their own `mmap` and unmaps them on free, and
/// returns the heap's free top to the kernel beyond 128 KiB, so a training step that frees and
/// re-allocates the same activations faults every page in again and the kernel zeroes it: 15%
/// of a DCGAN step at batch 64 (`perf record`, docs/benchmarks.md). This keeps blocks up to
/// glibc's maximum of 32 MiB on the heap and up to 1 GiB of free heap mapped. Peak memory is
/// unchanged (freed memory is reused, not added); memory stays with the process after a peak.
/// Does nothing when `GLIBC_TUNABLES` is set (the user's own malloc settings win) or off glibc.
/// Returns whether the settings were applied.
pub fn tune_allocator() -> bool {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return false;
    }
    // SAFETY: plain integer arguments; mallopt only changes malloc's thresholds.
    unsafe { zoo_tune_malloc(32 << 20, 1 << 30) != 0 }
}

/// `x` (N, C, H, W) stored channels-last (NHWC order, `x.contiguous(memory_format=
/// torch.channels_last)`), differentiable; the same shape and values. Convolutions, BatchNorm
/// and pointwise ops keep the order, and on the CPU oneDNN's convolutions then read and write
/// it directly, where NCHW tensors are converted to its blocked layout and back at every call.
/// The gradient goes back in x's own order.
pub fn channels_last(x: &Tensor) -> Result<Tensor> {
    to_layout(x, true)
}

/// `x` (N, C, H, W) in NCHW order (the inverse of [`channels_last`]); the gradient goes back in
/// x's own order. libtorch's `contiguous()` would hand on the gradient in NCHW order, and its
/// pointwise backward kernels (ReLU's) run ~10x slower on operands of mixed orders.
pub fn nchw(x: &Tensor) -> Result<Tensor> {
    to_layout(x, false)
}

fn to_layout(x: &Tensor, channels_last: bool) -> Result<Tensor> {
    if x.dim() != 4 {
        return Err(Error::Shape(format!("memory layout: expected a 4-D tensor, got shape {:?}", x.size())));
    }
    // SAFETY: x is a live tensor for the call.
    unsafe {
        shim_tensor("to_layout", |err, len| zoo_to_layout(ptr(Some(x)), i32::from(channels_last), err, len))
    }
}

/// Drops `var`'s gradient, as PyTorch's `zero_grad()` does by default (`set_to_none=True`): the
/// next backward stores its gradient tensor as is, where zeroing would cost a fill and an add
/// over every parameter each step.
pub fn clear_grad(var: &Tensor) {
    // SAFETY: var is a live tensor; resetting its grad field is what `var.grad = None` does.
    unsafe { zoo_clear_grad(ptr(Some(var))) }
}

/// One step of libtorch's fused AdamW kernel over `params` (updated in place with their
/// `exp_avg`/`exp_avg_sq` moments), all with bias corrections for step `step`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    step: u64,
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    eps: f64,
) -> Result<()> {
    let n = params.len();
    if [grads.len(), exp_avgs.len(), exp_avg_sqs.len()].iter().any(|&k| k != n) {
        return Err(Error::Config("fused AdamW: parameter and state lists differ in length".into()));
    }
    // The kernel walks each parameter's elements through the other three tensors' data
    // pointers without checking them: a mismatch must not reach it.
    for i in 0..n {
        let p = params[i];
        for t in [grads[i], exp_avgs[i], exp_avg_sqs[i]] {
            if t.size() != p.size() || t.kind() != p.kind() || t.device() != p.device() || !t.is_contiguous()
            {
                return Err(Error::Config(format!(
                    "fused AdamW: a gradient or moment of shape {:?} ({:?}) for a parameter of shape {:?} ({:?})",
                    t.size(),
                    t.kind(),
                    p.size(),
                    p.kind()
                )));
            }
        }
    }
    let Some(first) = params.first() else { return Ok(()) };
    let steps = Tensor::f_full([], step as f64, (tch::Kind::Float, first.device()))?;
    let ptrs =
        |ts: &[&Tensor]| -> Vec<*const c_void> { ts.iter().map(|t| t.as_ptr() as *const c_void).collect() };
    let (p, g, m, v, s) =
        (ptrs(params), ptrs(grads), ptrs(exp_avgs), ptrs(exp_avg_sqs), ptrs(&vec![&steps; n]));
    let mut err = [0u8; 512];
    // SAFETY: every pointer is a live tensor (an at::Tensor) for the whole call; the kernel
    // updates params and moments in place, which nothing else is using during the call.
    let rc = tch::no_grad(|| unsafe {
        zoo_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n as i64,
            lr,
            betas.0,
            betas.1,
            weight_decay,
            eps,
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    });
    if rc != 0 {
        return Err(torch_error("AdamW step", &err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn leaky_relu_values_and_gradient() {
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.0, 1.5]).set_requires_grad(true);
        let y = leaky_relu(&x, 0.2).unwrap();
        assert_eq!(Vec::<f32>::try_from(&y).unwrap(), [-0.4, -0.1, 0.0, 1.5]);
        y.sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [0.2, 0.2, 0.2, 1.0]);
        // libtorch's exceptions come back as errors, not aborts.
        let e = leaky_relu(&Tensor::from_slice(&[true, false]), 0.2).unwrap_err().to_string();
        assert!(e.contains("leaky_relu: ") && e.contains("Bool") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn linear_equals_libtorch() {
        let opts = (Kind::Float, Device::Cpu);
        // K and N that are not multiples of the kernel's 16, 1-4 rows (the kernel) and 5 (libtorch)
        for (n, k) in [(37, 50), (64, 768), (3, 5), (16, 16)] {
            let w = Tensor::randn([n, k], opts);
            let b = Tensor::randn([n], opts);
            for shape in [vec![k], vec![1, k], vec![2, 1, k], vec![4, k], vec![5, k], vec![1, 3, k]] {
                let x = Tensor::randn(&shape[..], opts);
                for bias in [None, Some(&b)] {
                    let want = x.linear(&w, bias);
                    let got = tch::no_grad(|| linear(&x, &w, bias)).unwrap();
                    assert_eq!(got.size(), want.size());
                    let d = (&got - &want).abs().max().double_value(&[]);
                    assert!(d < 1e-4, "n {n} k {k} x {shape:?} bias {}: {d}", bias.is_some());
                }
            }
        }
        // autograd still sees it (libtorch's path), and a transposed view is computed right
        let w = Tensor::randn([8, 6], opts).set_requires_grad(true);
        let x = Tensor::randn([1, 6], opts);
        linear(&x, &w, None).unwrap().sum(Kind::Float).backward();
        assert_eq!(w.grad().size(), vec![8, 6]);
        let wt = Tensor::randn([6, 8], opts).tr();
        let d =
            (tch::no_grad(|| linear(&x, &wt, None)).unwrap() - x.linear::<&Tensor>(&wt, None)).abs().max();
        assert!(d.double_value(&[]) < 1e-5);
        // f64 goes to libtorch; mismatched sizes are libtorch's error, one line
        let x64 = Tensor::randn([1, 6], (Kind::Double, Device::Cpu));
        let w64 = Tensor::randn([3, 6], (Kind::Double, Device::Cpu));
        assert_eq!(linear(&x64, &w64, None).unwrap().size(), vec![1, 3]);
        let e =
            linear(&Tensor::randn([1, 5], opts), &w64.to_kind(Kind::Float), None).unwrap_err().to_string();
        assert!(e.contains("linear: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn linear_t_equals_addmm() {
        let opts = (Kind::Float, Device::Cpu);
        for (k, n) in [(50, 37), (768, 2304), (5, 3), (17, 4100), (3072, 64)] {
            let w = Tensor::randn([k, n], opts);
            let b = Tensor::randn([n], opts);
            for shape in [vec![k], vec![1, k], vec![1, 1, k], vec![3, k], vec![2, 2, k]] {
                let x = Tensor::randn(&shape[..], opts);
                for bias in [None, Some(&b)] {
                    let mut want = x.matmul(&w);
                    if let Some(b) = bias {
                        want += b;
                    }
                    let got = tch::no_grad(|| linear_t(&x, &w, bias)).unwrap();
                    assert_eq!(got.size(), want.size());
                    let d = (&got - &want).abs().max().double_value(&[]);
                    assert!(d < 1e-3, "k {k} n {n} x {shape:?} bias {}: {d}", bias.is_some());
                }
            }
        }
        let w = Tensor::randn([6, 8], opts).set_requires_grad(true);
        linear_t(&Tensor::randn([1, 6], opts), &w, None).unwrap().sum(Kind::Float).backward();
        assert_eq!(w.grad().size(), vec![6, 8]);
        let e = linear_t(&Tensor::randn([1, 5], opts), &Tensor::randn([6, 8], opts), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("linear: ") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn training_sized_linear_equals_libtorch() {
        let opts = (Kind::Float, Device::Cpu);
        // (rows of x as a shape, K, N, transposed weight, bias): the conv VAE's 3136 -> 256
        // at a small batch, 3-D input, a GPT-2 Conv1D (K, N) weight, N not a multiple of 16
        for (rows, k, n, transposed, bias) in [
            (vec![40], 3136, 256, false, true),
            (vec![2, 24], 96, 500, false, false),
            (vec![64], 128, 384, true, true),
            (vec![3, 33], 200, 75, true, false),
        ] {
            let mut shape = rows.clone();
            shape.push(k);
            let x = Tensor::randn(&shape[..], opts);
            let w = Tensor::randn(if transposed { [k, n] } else { [n, k] }, opts) * 0.1;
            let b = Tensor::randn([n], opts);
            let run = |ours: bool| {
                let (x, w, b) = (
                    x.copy().set_requires_grad(true),
                    w.copy().set_requires_grad(true),
                    b.copy().set_requires_grad(true),
                );
                let bias = bias.then_some(&b);
                let y = match (ours, transposed) {
                    (true, false) => linear(&x, &w, bias).unwrap(),
                    (true, true) => linear_t(&x, &w, bias).unwrap(),
                    (false, false) => x.linear(&w, bias),
                    (false, true) => {
                        x.matmul(&w) + bias.map_or_else(|| Tensor::zeros([n], opts), |b| b.shallow_clone())
                    }
                };
                if ours {
                    assert!(is_dnnl_linear(&x, &w, bias, transposed));
                }
                let g = Tensor::linspace(-1.0, 1.0, y.numel() as i64, opts).view(y.size().as_slice());
                (&y * &g).sum(Kind::Float).backward();
                let gb = if bias.is_some() { b.grad() } else { Tensor::zeros([1], opts) };
                [y.detach(), x.grad(), w.grad(), gb]
            };
            let (ours, theirs) = (run(true), run(false));
            for (part, p, q) in ["output", "input gradient", "weight gradient", "bias gradient"]
                .iter()
                .zip(&ours)
                .zip(&theirs)
                .map(|((a, b), c)| (a, b, c))
            {
                let d = max_diff(p, q);
                assert!(d < 1e-4 * q.abs().max().double_value(&[]).max(1.0), "{rows:?} {k}->{n} {part}: {d}");
            }
            // without gradients the same output
            let y = tch::no_grad(|| if transposed { linear_t(&x, &w, None) } else { linear(&x, &w, None) });
            let want = if transposed { x.matmul(&w) } else { x.linear::<&Tensor>(&w, None) };
            assert!(max_diff(&y.unwrap(), &want) < 1e-4 * want.abs().max().double_value(&[]));
        }
        // small products stay libtorch's
        let x = Tensor::randn([8, 64], opts);
        assert!(!is_dnnl_linear(&x, &Tensor::randn([64, 64], opts), None, false));
        // a gradient penalty differentiates the backward again: the weights' gradient of
        // |d sum(tanh(y)) / dx|^2 equals libtorch's
        let x0 = Tensor::randn([48, 160], opts);
        let w0 = Tensor::randn([200, 160], opts) * 0.1;
        let penalty = |ours: bool| {
            let (x, w) = (x0.copy().set_requires_grad(true), w0.copy().set_requires_grad(true));
            let y = if ours {
                assert!(is_dnnl_linear(&x, &w, None, false));
                linear(&x, &w, None).unwrap()
            } else {
                x.linear::<&Tensor>(&w, None)
            };
            let gx = Tensor::run_backward(&[y.tanh().sum(Kind::Float)], &[&x], true, true).remove(0);
            gx.square().sum(Kind::Float).backward();
            w.grad()
        };
        let (pa, pb) = (penalty(true), penalty(false));
        assert!(max_diff(&pa, &pb) < 1e-4 * pb.abs().max().double_value(&[]), "penalty");
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn conv2d_equals_libtorch() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        // Winograd shapes (sizes that are not multiples of 4, paddings 0-2, one and several
        // images, rectangles), and ones that go to libtorch (stride 2, 1x1, few channels/tiles).
        let cases: [(i64, i64, i64, i64, i64, i64, i64); 10] = [
            // (n, c, k, h, w, stride, pad)
            (1, 64, 96, 32, 32, 1, 1),
            (2, 64, 80, 19, 23, 1, 1),
            (3, 72, 64, 14, 30, 1, 0),
            (1, 64, 64, 34, 33, 1, 2),
            (4, 128, 64, 8, 8, 1, 1),
            (1, 64, 64, 16, 16, 2, 1),
            (1, 3, 64, 32, 32, 1, 1),
            (1, 32, 32, 32, 32, 1, 1),
            (1, 64, 64, 4, 4, 1, 1),
            (2, 64, 64, 17, 17, 1, 1),
        ];
        for (n, c, k, h, w, stride, pad) in cases {
            let x = Tensor::randn([n, c, h, w], opts);
            let wt = Tensor::randn([k, c, 3, 3], opts) * (1.0 / (9.0 * c as f64).sqrt());
            let b = Tensor::randn([k], opts);
            // stride 1 with enough channels and tiles is Winograd; the rest libtorch's
            let wino = tch::no_grad(|| conv2d_is_winograd(&x, &wt, Some(&b), [stride, stride], [pad, pad]));
            assert_eq!(wino, stride == 1 && c >= 64 && k >= 64 && h > 4, "{n}x{c}x{h}x{w} -> {k}");
            for bias in [None, Some(&b)] {
                let want = x.conv2d(&wt, bias, [stride, stride], [pad, pad], [1, 1], 1);
                let got = tch::no_grad(|| conv2d(&x, &wt, bias, [stride, stride], [pad, pad])).unwrap();
                let d = max_diff(&got, &want);
                assert!(d < 1e-4, "{n}x{c}x{h}x{w} -> {k}, stride {stride} pad {pad}: {d}");
            }
        }
        // Sampling keeps transformed filters while the weight is unchanged; an in-place update
        // (an optimizer step, a load) is seen.
        let x = Tensor::randn([1, 64, 16, 16], opts);
        let wt = Tensor::randn([64, 64, 3, 3], opts);
        assert!(tch::no_grad(|| conv2d_is_winograd(&x, &wt, None, [1, 1], [1, 1])));
        let first = tch::no_grad(|| conv2d(&x, &wt, None, [1, 1], [1, 1])).unwrap();
        tch::no_grad(|| {
            let _ = wt.shallow_clone().f_mul_scalar_(-2.0).unwrap();
        });
        let second = tch::no_grad(|| conv2d(&x, &wt, None, [1, 1], [1, 1])).unwrap();
        assert!(max_diff(&second, &(first * -2.0)) < 1e-4);
        // 1x1 and 5x5 filters go to libtorch
        let x = Tensor::randn([1, 16, 12, 12], opts);
        for ks in [1, 5] {
            let wt = Tensor::randn([8, 16, ks, ks], opts);
            let d = max_diff(
                &conv2d(&x, &wt, None, [1, 1], [0, 0]).unwrap(),
                &x.conv2d::<&Tensor>(&wt, None, [1, 1], [0, 0], [1, 1], 1),
            );
            assert!(d < 1e-4, "{ks}: {d}");
        }
    }

    #[test]
    fn conv2d_gradients_equal_libtorch() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        for (n, c, k, h, w, pad, bias) in
            [(2, 64, 72, 34, 29, 1, true), (1, 96, 64, 34, 34, 0, false), (1, 64, 64, 30, 29, 2, true)]
        {
            let x = Tensor::randn([n, c, h, w], opts);
            let wt = Tensor::randn([k, c, 3, 3], opts) * (1.0 / (9.0 * c as f64).sqrt());
            let b = Tensor::randn([k], opts);
            let run = |ours: bool| {
                let (x, wt, b) = (
                    x.copy().set_requires_grad(true),
                    wt.copy().set_requires_grad(true),
                    b.copy().set_requires_grad(true),
                );
                let bias = bias.then_some(&b);
                let y = if ours {
                    assert!(conv2d_is_winograd(&x, &wt, bias, [1, 1], [pad, pad]));
                    conv2d(&x, &wt, bias, [1, 1], [pad, pad]).unwrap()
                } else {
                    x.conv2d(&wt, bias, [1, 1], [pad, pad], [1, 1], 1)
                };
                // a weighting that makes every output position's gradient different
                let g = Tensor::linspace(-1.0, 1.0, y.numel() as i64, opts).view(y.size().as_slice());
                (&y * &g).sum(Kind::Float).backward();
                (y.detach(), x.grad(), wt.grad(), bias.map(|b| b.grad()))
            };
            let (ya, xa, wa, ba) = run(true);
            let (yb, xb, wb, bb) = run(false);
            // gradients are sums over every output position: compared relative to their size.
            // The filters' sums run over ~20k products in the Winograd domain, whose transforms
            // scale values by up to 8: float32 rounding reaches ~2e-5 of the largest.
            let close = |a: &Tensor, b: &Tensor, what: &str, tol: f64| {
                let scale = b.abs().max().double_value(&[]).max(1.0);
                let d = max_diff(a, b);
                assert!(d < tol * scale, "{what}, pad {pad}: {d} of {scale}");
            };
            close(&ya, &yb, "output", 2e-5);
            close(&xa, &xb, "input gradient", 2e-5);
            close(&wa, &wb, "filter gradient", 1e-4);
            if let (Some(ba), Some(bb)) = (ba, bb) {
                close(&ba, &bb, "bias gradient", 2e-5);
            }
        }
        // second derivatives (a gradient penalty: create_graph) equal libtorch's
        let x0 = Tensor::randn([4, 64, 16, 16], opts);
        let w0 = Tensor::randn([64, 64, 3, 3], opts) * 0.03;
        let penalty_grad = |ours: bool| {
            let (x, w) = (x0.copy().set_requires_grad(true), w0.copy().set_requires_grad(true));
            let y = if ours {
                assert!(conv2d_is_winograd(&x, &w, None, [1, 1], [1, 1]));
                conv2d(&x, &w, None, [1, 1], [1, 1]).unwrap()
            } else {
                x.conv2d::<&Tensor>(&w, None, [1, 1], [1, 1], [1, 1], 1)
            };
            let gx = Tensor::run_backward(&[y.tanh().sum(Kind::Float)], &[&x], true, true).remove(0);
            gx.square().sum(Kind::Float).backward();
            w.grad()
        };
        let (pa, pb) = (penalty_grad(true), penalty_grad(false));
        let d = max_diff(&pa, &pb);
        assert!(
            d < 1e-4 * (1.0 + pb.abs().max().double_value(&[])),
            "penalty gradient: {d} of {}",
            pb.abs().max().double_value(&[])
        );
        // only the filters need a gradient (the first layer): the input's is not computed
        let x = Tensor::randn([1, 64, 32, 32], opts);
        let wt = Tensor::randn([64, 64, 3, 3], opts).set_requires_grad(true);
        assert!(conv2d_is_winograd(&x, &wt, None, [1, 1], [1, 1]));
        conv2d(&x, &wt, None, [1, 1], [1, 1]).unwrap().sum(Kind::Float).backward();
        assert_eq!(wt.grad().size(), vec![64, 64, 3, 3]);
        assert!(!x.grad().defined());
        // mismatched channels are libtorch's error, one line
        let e =
            conv2d(&x, &Tensor::randn([64, 8, 3, 3], opts), None, [1, 1], [1, 1]).unwrap_err().to_string();
        assert!(e.starts_with("") && e.contains("conv2d: ") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn tune_allocator_is_accepted_by_glibc() {
        // mallopt refuses an mmap threshold above 32 MiB: the settings must be ones it takes
        if cfg!(target_env = "gnu") && std::env::var_os("GLIBC_TUNABLES").is_none() {
            assert!(tune_allocator());
        }
    }

    #[test]
    fn layout_changes_keep_values_and_send_gradients_back_in_the_input_order() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([2, 3, 4, 5], opts).set_requires_grad(true);
        // (gradients taken at a non-leaf: a leaf's gradient is restrided to the leaf's layout)
        let a = &x * 1.0;
        let y = channels_last(&a).unwrap();
        assert!(!y.is_contiguous() && max_diff(&y, &x) == 0.0);
        let out = (y.relu() * 2.0).sum(Kind::Float);
        let g = Tensor::run_backward(&[out], &[&a], false, false).remove(0);
        assert!(g.is_contiguous());
        assert_eq!(max_diff(&g, &(x.gt(0.0).to_kind(Kind::Float) * 2.0)), 0.0);
        // and back: a channels-last input gets a channels-last gradient
        let b = channels_last(&x).unwrap() * 1.0;
        assert!(!b.is_contiguous());
        let z = nchw(&b).unwrap();
        assert!(z.is_contiguous());
        let g = Tensor::run_backward(&[(&z * &z).sum(Kind::Float)], &[&b], false, false).remove(0);
        assert!(!g.is_contiguous() && max_diff(&g, &(&x * 2.0)) < 1e-6);
        // already in order: the same tensor
        assert_eq!(nchw(&x).unwrap().data_ptr(), x.data_ptr());
        let e = channels_last(&Tensor::zeros([2, 3, 4], opts)).unwrap_err().to_string();
        assert!(e.contains("4-D") && e.contains("[2, 3, 4]"), "{e}");
    }

    /// A convolution's output and its input's, filters' and (if any) bias's gradients.
    type Grads = (Tensor, Tensor, Tensor, Option<Tensor>);

    /// `a` within float32 rounding of `b`, relative to `b`'s largest value (at least 1).
    fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
        let scale = b.abs().max().double_value(&[]).max(1.0);
        let d = max_diff(a, b);
        assert!(d < 2e-5 * scale, "{what}: {d} of {scale}");
    }

    fn assert_same_grads(what: &str, a: &Grads, b: &Grads) {
        assert_close(&a.0, &b.0, &format!("{what}, output"));
        assert_close(&a.1, &b.1, &format!("{what}, input gradient"));
        assert_close(&a.2, &b.2, &format!("{what}, filter gradient"));
        if let (Some(p), Some(q)) = (&a.3, &b.3) {
            assert_close(p, q, &format!("{what}, bias gradient"));
        }
    }

    /// The filters' gradient of a gradient penalty on the input (|d tanh(y).sum() / dx|^2, with
    /// create_graph) of a 4x4 (transposed) convolution at stride 2, padding 1: zoo's (`ours`) or
    /// libtorch's, on fresh leaves copied from x0 and w0.
    fn s2_penalty_filter_grad(ours: bool, transposed: bool, x0: &Tensor, w0: &Tensor) -> Tensor {
        let (s, p) = ([2, 2], [1, 1]);
        let (x, w) = (x0.copy().set_requires_grad(true), w0.copy().set_requires_grad(true));
        let y = match (ours, transposed) {
            (true, true) => conv_transpose2d(&x, &w, None, s, p).unwrap(),
            (true, false) => conv2d(&x, &w, None, s, p).unwrap(),
            (false, true) => x.conv_transpose2d::<&Tensor>(&w, None, s, p, [0, 0], 1, [1, 1]),
            (false, false) => x.conv2d::<&Tensor>(&w, None, s, p, [1, 1], 1),
        };
        let gx = Tensor::run_backward(&[y.tanh().sum(Kind::Float)], &[&x], true, true).remove(0);
        gx.square().sum(Kind::Float).backward();
        w.grad()
    }

    #[test]
    fn fused_relu_convolutions_equal_libtorch() {
        let opts = (Kind::Float, Device::Cpu);
        // (transposed, x's shape, w's shape, stride, padding, the image needs a gradient): the
        // single-channel first layer, the 4x4 stride-2 upsampling and downsampling kernels
        // (ReLU fused), and layers libtorch runs (ReLU after it)
        for (transposed, xs, ws, s, p, x_grad) in [
            (false, [3, 1, 28, 14], [32, 1, 4, 4], 2, 1, false),
            (false, [2, 32, 14, 14], [64, 32, 4, 4], 2, 1, true),
            (false, [2, 32, 6, 10], [32, 32, 4, 4], 2, 1, false),
            (false, [2, 1, 8, 6], [16, 1, 4, 4], 2, 1, true),
            (true, [2, 64, 7, 7], [64, 32, 4, 4], 2, 1, true),
            (true, [2, 64, 3, 5], [64, 32, 4, 4], 2, 1, false),
            (false, [2, 8, 9, 9], [16, 8, 3, 3], 1, 1, true),
            (true, [2, 8, 5, 5], [8, 4, 3, 3], 1, 0, true),
            // zoo's custom functions without a fused kernel (the GEMM paths for few channels)
            (true, [2, 16, 5, 6], [16, 2, 3, 3], 1, 0, true),
            (false, [2, 3, 10, 10], [16, 3, 4, 4], 2, 1, true),
        ] {
            let x0 = Tensor::randn(xs, opts);
            let w0 = Tensor::randn(ws, opts) * 0.3;
            let b0 = Tensor::randn([ws[if transposed { 1 } else { 0 }]], opts) * 0.3;
            let run = |ours: bool| -> Grads {
                let x = x0.copy().set_requires_grad(x_grad);
                let (w, b) = (w0.copy().set_requires_grad(true), b0.copy().set_requires_grad(true));
                let y = match (ours, transposed) {
                    (true, true) => conv_transpose2d_relu(&x, &w, Some(&b), [s, s], [p, p]).unwrap(),
                    (true, false) => conv2d_relu(&x, &w, Some(&b), [s, s], [p, p]).unwrap(),
                    (false, true) => {
                        x.conv_transpose2d(&w, Some(&b), [s, s], [p, p], [0, 0], 1, [1, 1]).relu()
                    }
                    (false, false) => x.conv2d(&w, Some(&b), [s, s], [p, p], [1, 1], 1).relu(),
                };
                let g = Tensor::linspace(-1.0, 1.0, y.numel() as i64, opts).view(y.size().as_slice());
                (&y * &g).sum(Kind::Float).backward();
                let gx = if x_grad { x.grad() } else { Tensor::zeros([1], opts) };
                (y.detach(), gx, w.grad(), Some(b.grad()))
            };
            let what = format!("relu, transposed {transposed}, x {xs:?}, w {ws:?}");
            let (a, r) = (run(true), run(false));
            // (a ReLU zeroes a good part of the output: the comparison must see live units)
            assert!(r.0.gt(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]) > 0.2);
            assert_same_grads(&what, &a, &r);
            let y = tch::no_grad(|| {
                if transposed {
                    conv_transpose2d_relu(&x0, &w0, Some(&b0), [s, s], [p, p])
                } else {
                    conv2d_relu(&x0, &w0, Some(&b0), [s, s], [p, p])
                }
            })
            .unwrap();
            assert_close(&y, &r.0, &format!("{what}, without gradients"));
        }
    }

    #[test]
    fn few_channel_convolutions_equal_libtorch() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        // y = conv(x, w, b) on fresh leaves, and the gradients of a weighting of y that makes
        // every output position's differ
        type Conv<'a> = dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor + 'a;
        // (`cl`: the input and the output's gradient stored channels-last, as DCGAN runs them)
        let grads = |x: &Tensor, w: &Tensor, b: &Tensor, bias: bool, cl: bool, conv: &Conv| -> Grads {
            let (x, w, b) = (
                x.copy().set_requires_grad(true),
                w.copy().set_requires_grad(true),
                b.copy().set_requires_grad(true),
            );
            let bias = bias.then_some(&b);
            let xin = if cl { channels_last(&x).unwrap() } else { x.shallow_clone() };
            // (one channel is both layouts at once)
            assert!(!cl || x.size()[1] == 1 || !xin.is_contiguous());
            let y = conv(&xin, &w, bias);
            let mut g = Tensor::linspace(-1.0, 1.0, y.numel() as i64, opts).view(y.size().as_slice());
            if cl {
                g = channels_last(&g).unwrap();
            }
            (&y * &g).sum(Kind::Float).backward();
            (y.detach(), x.grad(), w.grad(), bias.map(|b| b.grad()))
        };
        // (transposed, N, C in, K out, H, W, kernel, stride, padding, bias). Transposed: the
        // VAE's and DCGAN's last layers, odd sizes, stride 1 and 3; at 4x4 stride 2 in NCHW the
        // few-output kernels (rows of one, two and three 16-column chunks). Not transposed: few input
        // channels whose input needs a gradient (DCGAN's first discriminator layer in the
        // generator's step), including sizes the stride does not cover, where the last rows of
        // the input get no gradient.
        for (transposed, n, c, k, h, w, ks, s, p, bias) in [
            (true, 3, 32, 1, 7, 9, 4, 2, 1, true),
            (true, 2, 64, 3, 8, 8, 4, 2, 1, false),
            (true, 2, 16, 2, 5, 6, 3, 1, 0, true),
            (true, 2, 20, 4, 5, 5, 5, 3, 2, true),
            (true, 2, 16, 4, 3, 17, 4, 2, 1, true),
            (true, 3, 16, 2, 1, 2, 4, 2, 1, true),
            // one pixel wide at stride >= 2 with padding: the column bound must round down
            (true, 3, 16, 2, 3, 1, 4, 2, 1, true),
            (true, 2, 16, 3, 4, 1, 3, 2, 1, false),
            (true, 2, 16, 1, 2, 1, 5, 3, 2, true),
            (true, 2, 24, 1, 4, 40, 4, 2, 1, false),
            (false, 2, 3, 64, 16, 16, 4, 2, 1, false),
            (false, 2, 1, 32, 15, 13, 4, 2, 1, true),
            (false, 2, 2, 16, 9, 9, 3, 1, 1, true),
            (false, 2, 3, 16, 10, 11, 5, 3, 2, true),
            // one channel at 4x4 stride 2, even sides: the forward is the single-channel
            // kernel (rows of 7 and of 18 outputs: one and two vectors)
            (false, 3, 1, 32, 28, 14, 4, 2, 1, true),
            (false, 2, 1, 16, 6, 36, 4, 2, 1, false),
        ] {
            let x = Tensor::randn([n, c, h, w], opts);
            // PyTorch's layouts: ConvTranspose2d (in, out, k, k), Conv2d (out, in, k, k)
            let shape = if transposed { [c, k, ks, ks] } else { [k, c, ks, ks] };
            let wt = Tensor::randn(shape, opts) * 0.1;
            let b = Tensor::randn([k], opts);
            let ours = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
                assert!(is_few_channel_path(x, w, b, transposed));
                let conv = if transposed { conv_transpose2d } else { conv2d };
                conv(x, w, b, [s, s], [p, p]).unwrap()
            };
            let theirs = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
                if transposed {
                    x.conv_transpose2d(w, b, [s, s], [p, p], [0, 0], 1, [1, 1])
                } else {
                    x.conv2d(w, b, [s, s], [p, p], [1, 1], 1)
                }
            };
            for cl in [false, true] {
                let (ga, gb) =
                    (grads(&x, &wt, &b, bias, cl, &ours), grads(&x, &wt, &b, bias, false, &theirs));
                assert_same_grads(
                    &format!("transposed {transposed}, {c}->{k}, k{ks} s{s} p{p}, channels-last {cl}"),
                    &ga,
                    &gb,
                );
                if transposed {
                    // without gradients (sampling) the same values
                    let _guard = tch::no_grad_guard();
                    let xin = if cl { channels_last(&x).unwrap() } else { x.shallow_clone() };
                    let ya = conv_transpose2d(&xin, &wt, bias.then_some(&b), [s, s], [p, p]).unwrap();
                    let yb = theirs(&x, &wt, bias.then_some(&b));
                    assert!(max_diff(&ya, &yb) < 2e-5 * yb.abs().max().double_value(&[]).max(1.0));
                }
            }
        }
        // a grey image's first layer (no gradient for the image): the single-channel kernel,
        // against libtorch's output and filter and bias gradients
        let x = Tensor::randn([4, 1, 28, 28], opts);
        let wt = Tensor::randn([32, 1, 4, 4], opts) * 0.2;
        let b = Tensor::randn([32], opts);
        let first = |ours: bool| {
            let (w, b) = (wt.copy().set_requires_grad(true), b.copy().set_requires_grad(true));
            let y = if ours {
                conv2d(&x, &w, Some(&b), [2, 2], [1, 1]).unwrap()
            } else {
                x.conv2d(&w, Some(&b), [2, 2], [1, 1], [1, 1], 1)
            };
            let g = Tensor::linspace(-1.0, 1.0, y.numel() as i64, opts).view(y.size().as_slice());
            (&y * &g).sum(Kind::Float).backward();
            (y.detach(), w.grad(), b.grad())
        };
        let (a, r) = (first(true), first(false));
        assert_close(&a.0, &r.0, "first layer, output");
        assert_close(&a.1, &r.1, "first layer, filter gradient");
        assert_close(&a.2, &r.2, "first layer, bias gradient");
        let y = tch::no_grad(|| conv2d(&x, &wt, Some(&b), [2, 2], [1, 1])).unwrap();
        assert_close(&y, &r.0, "first layer without gradients");
        // an input without a gradient (real images) stays libtorch's plain convolution
        let x = Tensor::randn([2, 3, 16, 16], opts);
        let wt = Tensor::randn([64, 3, 4, 4], opts).set_requires_grad(true);
        assert!(!is_few_channel_path(&x, &wt, None, false));
        // second derivatives through both (a gradient penalty on the input) equal libtorch's
        for transposed in [true, false] {
            // (the same operands for both sides, drawn once: the global generator is shared with
            // tests running alongside)
            let (x0, w0) = if transposed {
                (Tensor::randn([2, 32, 6, 6], opts), Tensor::randn([32, 3, 4, 4], opts) * 0.1)
            } else {
                (Tensor::randn([2, 3, 12, 12], opts), Tensor::randn([32, 3, 4, 4], opts) * 0.1)
            };
            assert!(is_few_channel_path(&x0.copy().set_requires_grad(true), &w0, None, transposed));
            let pa = s2_penalty_filter_grad(true, transposed, &x0, &w0);
            let pb = s2_penalty_filter_grad(false, transposed, &x0, &w0);
            let d = max_diff(&pa, &pb);
            assert!(
                d < 1e-4 * (1.0 + pb.abs().max().double_value(&[])),
                "penalty gradient ({transposed}): {d}"
            );
        }
        // mismatched channels are libtorch's error, one line
        let e = conv_transpose2d(
            &Tensor::randn([1, 8, 4, 4], opts),
            &Tensor::randn([16, 3, 4, 4], opts),
            None,
            [2, 2],
            [1, 1],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("conv_transpose2d: ") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn k4s2_convolutions_equal_libtorch() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        // (the kernel and the gemv kernel both need AVX-512F: elsewhere these run libtorch's)
        let avx512 = gemv_available();
        let (s, p) = ([2, 2], [1, 1]);
        // y = conv(x, w, b) on fresh leaves, and every gradient of a weighting of y that makes
        // each output position's differ
        let grads = |x: &Tensor, w: &Tensor, b: Option<&Tensor>, ours: bool, transposed: bool| {
            let (x, w) = (x.copy().set_requires_grad(true), w.copy().set_requires_grad(true));
            let b = b.map(|b| b.copy().set_requires_grad(true));
            if ours {
                assert_eq!(is_k4s2_path(&x, &w, b.as_ref(), transposed, s, p), avx512);
            }
            let y = match (ours, transposed) {
                (true, true) => conv_transpose2d(&x, &w, b.as_ref(), s, p).unwrap(),
                (true, false) => conv2d(&x, &w, b.as_ref(), s, p).unwrap(),
                (false, true) => x.conv_transpose2d(&w, b.as_ref(), s, p, [0, 0], 1, [1, 1]),
                (false, false) => x.conv2d(&w, b.as_ref(), s, p, [1, 1], 1),
            };
            let g = Tensor::linspace(-1.0, 1.0, y.numel() as i64, opts).view(y.size().as_slice());
            (&y * &g).sum(Kind::Float).backward();
            (y.detach(), x.grad(), w.grad(), b.map(|b| b.grad()))
        };
        // (transposed, N, C in, K out, H, W, bias, strided). Transposed: the conv VAE's 64 -> 32
        // layer; two blocks of 32 outputs, an odd number of rows and rows of 9 pixels (tiles of
        // 5 and 4); a 1x1 input; 20 channels (a block of 16 and 4 more) in rows of 17 pixels;
        // 96 -> 32 in rows of 9; 48 -> 64 on 7x7 (the Winograd rows: three blocks of 16 input
        // channels, two of 32 outputs). Not transposed (the input's gradient is the kernel): the VAE's
        // 32 -> 64 convolution, rows whose gradient has 9 pixels, 64 -> 32 (also on 14x14, the
        // Winograd rows) and 32 -> 160.
        // `strided`: the 4x4 stride-2 convolution kernel runs the convolution's forward and
        // filter gradient (the transposed layer's input and filter gradients).
        for (transposed, n, c, k, h, w, bias, strided) in [
            (true, 3, 64, 32, 7, 7, true, true),
            (true, 2, 16, 64, 5, 9, false, false),
            (true, 2, 48, 32, 1, 1, true, false),
            (true, 2, 20, 32, 3, 17, true, false),
            (true, 2, 96, 32, 5, 9, true, true),
            (true, 2, 48, 64, 7, 7, true, false),
            (false, 3, 32, 64, 14, 14, true, true),
            (false, 2, 64, 16, 10, 18, false, false),
            (false, 2, 64, 32, 10, 18, true, true),
            (false, 2, 64, 32, 14, 14, false, true),
            (false, 1, 32, 160, 6, 30, false, true),
        ] {
            let x = Tensor::randn([n, c, h, w], opts);
            let shape = if transposed { [c, k, 4, 4] } else { [k, c, 4, 4] };
            let wt = Tensor::randn(shape, opts) * 0.1;
            let b = Tensor::randn([k], opts);
            let b = bias.then_some(&b);
            // (a transposed layer's backward: its output's gradient through the filters)
            let conv_in = if transposed { Tensor::zeros([n, k, 2 * h, 2 * w], opts) } else { x.copy() };
            let conv_b = if transposed { None } else { b };
            assert_eq!(is_conv_k4s2_path(&conv_in, &wt, conv_b, s, p), avx512 && strided, "{c}->{k}");
            let (a, r) = (grads(&x, &wt, b, true, transposed), grads(&x, &wt, b, false, transposed));
            let what = format!("transposed {transposed}, {c}->{k}, {h}x{w}");
            assert_same_grads(&what, &a, &r);
            if transposed {
                // without gradients (sampling, the IW-NLL) the same values
                let got = tch::no_grad(|| conv_transpose2d(&x, &wt, b, s, p)).unwrap();
                assert_close(&got, &r.0, &format!("{what}, output without gradients"));
            }
        }
        // what stays libtorch's: a channels-last input (DCGAN keeps oneDNN's channels-last
        // kernels), 16 outputs (not a multiple of 32), other strides, filters too big for the
        // cache, odd sides for the convolution
        let x = Tensor::randn([2, 64, 7, 7], opts);
        let w = Tensor::randn([64, 32, 4, 4], opts);
        assert!(!is_k4s2_path(&channels_last(&x).unwrap(), &w, None, true, s, p));
        assert!(!is_k4s2_path(&x, &Tensor::randn([64, 16, 4, 4], opts), None, true, s, p));
        assert!(!is_k4s2_path(&x, &w, None, true, [1, 1], p));
        let big = Tensor::randn([2, 256, 4, 4], opts);
        assert!(!is_k4s2_path(&big, &Tensor::randn([256, 128, 4, 4], opts), None, true, s, p));
        let xg = Tensor::randn([2, 32, 15, 14], opts).set_requires_grad(true);
        assert!(!is_k4s2_path(&xg, &Tensor::randn([64, 32, 4, 4], opts), None, false, s, p));
        // an input without a gradient: nothing to take
        let x = Tensor::randn([2, 32, 14, 14], opts);
        assert!(!is_k4s2_path(&x, &Tensor::randn([64, 32, 4, 4], opts), None, false, s, p));
        // second derivatives (a gradient penalty on the input) equal libtorch's
        for transposed in [true, false] {
            // (both sides get the same operands, drawn once: tests running alongside draw from
            // the same global generator, so reseeding per side is not enough)
            let (x0, w0) = if transposed {
                (Tensor::randn([2, 32, 5, 5], opts), Tensor::randn([32, 32, 4, 4], opts) * 0.1)
            } else {
                (Tensor::randn([2, 32, 8, 8], opts), Tensor::randn([16, 32, 4, 4], opts) * 0.1)
            };
            let pa = s2_penalty_filter_grad(true, transposed, &x0, &w0);
            let pb = s2_penalty_filter_grad(false, transposed, &x0, &w0);
            let d = max_diff(&pa, &pb);
            assert!(d < 1e-4 * (1.0 + pb.abs().max().double_value(&[])), "penalty ({transposed}): {d}");
        }
    }

    #[test]
    fn conv1d_equals_libtorch() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        // dilations 1-128 ("same" padding), lengths that are not multiples of 4 d, several
        // sequences; then shapes libtorch keeps (no "same" padding, kernel 1, gradients)
        for (n, c, k, t, d) in [
            (1, 16, 32, 1000, 1),
            (2, 32, 64, 517, 2),
            (1, 16, 16, 1001, 8),
            (1, 24, 48, 700, 64),
            (3, 16, 16, 333, 128),
            (1, 16, 16, 90, 1),
        ] {
            let x = Tensor::randn([n, c, t], opts);
            let w = Tensor::randn([k, c, 3], opts) * (1.0 / (3.0 * c as f64).sqrt());
            let b = Tensor::randn([k], opts);
            for bias in [None, Some(&b)] {
                let want = x.conv1d(&w, bias, [1], [d], [d], 1);
                let got = tch::no_grad(|| conv1d(&x, &w, bias, d, d)).unwrap();
                let dd = max_diff(&got, &want);
                assert!(dd < 1e-4, "{n}x{c}x{t} -> {k}, dilation {d}: {dd}");
            }
        }
        // the added term, a strided slice as WN passes it, on both paths
        let x = Tensor::randn([2, 16, 300], opts);
        let w = Tensor::randn([32, 16, 3], opts) * 0.1;
        let spect = Tensor::randn([2, 96, 300], opts);
        let add = spect.narrow(1, 32, 32);
        for d in [1, 4] {
            let want = x.conv1d::<&Tensor>(&w, None, [1], [d], [d], 1) + &add;
            let got = tch::no_grad(|| conv1d_add(&x, &w, None, d, d, Some(&add))).unwrap();
            assert!(max_diff(&got, &want) < 1e-4);
            let got = conv1d_add(&x, &w.copy().set_requires_grad(true), None, d, d, Some(&add)).unwrap();
            assert!(max_diff(&got, &want) < 1e-4);
        }
        let x = Tensor::randn([1, 16, 400], opts);
        let w = Tensor::randn([16, 16, 3], opts);
        let want = x.conv1d::<&Tensor>(&w, None, [1], [0], [2], 1);
        assert!(max_diff(&tch::no_grad(|| conv1d(&x, &w, None, 0, 2)).unwrap(), &want) < 1e-4);
        let w1 = Tensor::randn([32, 16, 1], opts);
        assert!(
            max_diff(
                &conv1d(&x, &w1, None, 0, 1).unwrap(),
                &x.conv1d::<&Tensor>(&w1, None, [1], [0], [1], 1)
            ) < 1e-4
        );
        let wg = w.copy().set_requires_grad(true);
        conv1d(&x, &wg, None, 1, 1).unwrap().sum(Kind::Float).backward();
        assert_eq!(wg.grad().size(), vec![16, 16, 3]);
        let e = conv1d(&x, &Tensor::randn([16, 8, 3], opts), None, 1, 1).unwrap_err().to_string();
        assert!(e.contains("conv1d: ") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn winograd_filter_caches_see_optimizer_updates() {
        let opts = (Kind::Float, Device::Cpu);
        tch::manual_seed(0);
        // a 3x3 convolution and a dilated kernel-3 conv1d (WaveGlow's WN) that take the cached
        // Winograd paths without gradients, as sampling and evaluation during training do
        let w2 = (Tensor::randn([64, 64, 3, 3], opts) * 0.05).set_requires_grad(true);
        let x2 = Tensor::randn([1, 64, 16, 16], opts);
        let w1 = (Tensor::randn([32, 32, 3], opts) * 0.1).set_requires_grad(true);
        let x1 = Tensor::randn([1, 32, 512], opts);
        let run = || {
            let _guard = tch::no_grad_guard();
            assert!(conv2d_is_winograd(&x2, &w2, None, [1, 1], [1, 1]));
            let y2 = conv2d(&x2, &w2, None, [1, 1], [1, 1]).unwrap();
            let y1 = conv1d(&x1, &w1, None, 2, 2).unwrap();
            let d2 = max_diff(&y2, &x2.conv2d::<&Tensor>(&w2, None, [1, 1], [1, 1], [1, 1], 1));
            let d1 = max_diff(&y1, &x1.conv1d::<&Tensor>(&w1, None, [1], [2], [2], 1));
            (d2, d1)
        };
        let (d2, d1) = run();
        assert!(d2 < 1e-3 && d1 < 1e-3, "before the update: {d2} {d1}");
        // one optimizer step changes both weights in place
        let (g2, g1) = (Tensor::ones_like(&w2), Tensor::ones_like(&w1));
        let (m2, v2, m1, v1) = (w2.zeros_like(), w2.zeros_like(), w1.zeros_like(), w1.zeros_like());
        fused_adamw(&[&w2, &w1], &[&g2, &g1], &[&m2, &m1], &[&v2, &v1], 1, 0.1, (0.9, 0.99), 0.0, 1e-8)
            .unwrap();
        let (d2, d1) = run();
        assert!(d2 < 1e-3 && d1 < 1e-3, "after the update the cached filters were stale: {d2} {d1}");
    }

    #[test]
    fn fused_adamw_checks_its_lists() {
        let w = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let e = fused_adamw(&[&w], &[], &[&w], &[&w], 1, 0.1, (0.9, 0.99), 0.0, 1e-8).unwrap_err();
        assert!(e.to_string().contains("differ in length"), "{e}");
        // The kernel does not check shapes itself: a gradient of another shape stops here.
        let g = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let (m, v) = (w.zeros_like(), w.zeros_like());
        let e =
            fused_adamw(&[&w], &[&g], &[&m], &[&v], 1, 0.1, (0.9, 0.99), 0.0, 1e-8).unwrap_err().to_string();
        assert!(e.contains("shape [4]"), "{e}");
        // libtorch's own errors (integer parameters) come back as one line.
        let wi = Tensor::zeros([3], (Kind::Int64, Device::Cpu));
        let (gi, mi, vi) = (wi.zeros_like(), wi.zeros_like(), wi.zeros_like());
        let e = fused_adamw(&[&wi], &[&gi], &[&mi], &[&vi], 1, 0.1, (0.9, 0.99), 0.0, 1e-8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("AdamW step: ") && !e.contains('\n'), "{e}");
    }
}
