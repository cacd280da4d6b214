//! libtorch operators that tch does not wrap, or wraps without an argument we need, through
//! the C++ of csrc/ops.cpp (compiled by build.rs against the same libtorch).
use std::ffi::{c_char, c_void, CStr};

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
}

/// The first line of the C++ exception message the shim wrote into `err`.
fn torch_error(what: &str, err: &[u8]) -> Error {
    let msg = CStr::from_bytes_until_nul(err).map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
    Error::Torch(tch::TchError::Torch(format!("{what}: {}", msg.lines().next().unwrap_or(""))))
}

/// Leaky ReLU with slope `slope` for x < 0 (`torch.nn.functional.leaky_relu`), differentiable.
/// Shapes: any -> the same.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    let mut err = [0u8; 512];
    // SAFETY: x is a live tensor for the call; the result is a new at::Tensor whose ownership
    // passes to the returned tch Tensor (freed by its Drop).
    let out = unsafe {
        zoo_leaky_relu(x.as_ptr() as *const c_void, slope, err.as_mut_ptr() as *mut c_char, err.len())
    };
    if out.is_null() {
        return Err(torch_error("leaky_relu", &err));
    }
    Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
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
