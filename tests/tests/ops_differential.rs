//! Every custom path of `zoo_core::ops` against libtorch's own operator, on random shapes,
//! strides, paddings, dilations, layouts, biases and grad modes: the forward and the gradients
//! of the input, the weights and the bias. The shapes are drawn to reach the custom kernels
//! (Winograd 2-D and 1-D, the few-channel GEMM of transposed convolutions, the 4x4 stride-2
//! kernels, gemv, oneDNN's matmul) as well as libtorch's fallbacks, including 1-pixel-wide and
//! 1-pixel-high inputs; the test counts how often each custom path ran and requires each one
//! this CPU has to run.
//!
//! `ZOO_OPS_CASES` sets the number of random cases (400 by default).
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};
use zoo_core::ops;

fn cases() -> usize {
    std::env::var("ZOO_OPS_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(400)
}

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.gen_range(0..xs.len())]
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

/// Largest |a - b| against the size of b, with the case for the message.
fn check(what: &str, case: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.size(), want.size(), "{what} of {case}: shapes");
    let scale = 1.0 + want.abs().max().double_value(&[]);
    let err = (got - want).abs().max().double_value(&[]);
    assert!(err <= 2e-4 * scale, "{what} of {case}: max error {err} (scale {scale})");
}

/// The operator under test and its reference, on (x, w, b).
type Op<'a> = &'a dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor;

/// Runs `ours` and `reference` on copies of (x, w, b): forward, and with `grad` the gradients of
/// sum(out * g) for each input.
fn compare(case: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>, grad: bool, ours: Op, reference: Op) {
    let leaves = || {
        let l = |t: &Tensor| t.detach().copy().set_requires_grad(grad);
        (l(x), l(w), b.map(l))
    };
    let (xa, wa, ba) = leaves();
    let (xb, wb, bb) = leaves();
    let run = |f: Op, x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        if grad {
            f(x, w, b)
        } else {
            tch::no_grad(|| f(x, w, b))
        }
    };
    let got = run(ours, &xa, &wa, ba.as_ref());
    let want = run(reference, &xb, &wb, bb.as_ref());
    check("forward", case, &got, &want);
    if grad {
        let g = Tensor::randn_like(&want);
        (got * &g).sum(Kind::Float).backward();
        (want * &g).sum(Kind::Float).backward();
        check("input gradient", case, &xa.grad(), &xb.grad());
        check("weight gradient", case, &wa.grad(), &wb.grad());
        if let (Some(a), Some(b)) = (&ba, &bb) {
            check("bias gradient", case, &a.grad(), &b.grad());
        }
    }
}

#[derive(Default, Debug)]
struct Paths {
    winograd: u32,
    conv_k4s2: u32,
    convt_k4s2: u32,
    few_channel: u32,
    dnnl_linear: u32,
    cases: [u32; 5],
}

fn conv2d_case(rng: &mut StdRng, transposed: bool, paths: &mut Paths) {
    // A quarter of the cases are the 4x4 stride-2 layers of the GANs and VAEs, a quarter the
    // 3x3 layers of UNets and VAEs with many channels; the rest anything.
    let (c_in, c_out, k, s, p) = match rng.gen_range(0..4) {
        0 => (pick(rng, &[1, 16, 32, 64]), pick(rng, &[1, 3, 16, 32, 64]), 4, 2, 1),
        1 => (pick(rng, &[32, 64, 96]), pick(rng, &[32, 64, 96]), 3, 1, 1),
        _ => {
            let k = pick(rng, &[1, 2, 3, 4]);
            (
                pick(rng, &[1, 3, 4, 16, 32, 64, 96]),
                pick(rng, &[1, 2, 3, 4, 16, 32, 64]),
                k,
                pick(rng, &[1, 2]),
                rng.gen_range(0..k.min(3)),
            )
        }
    };
    let side = |rng: &mut StdRng| {
        if rng.gen_bool(0.15) {
            1
        } else {
            2 * rng.gen_range(1..=10) - i64::from(rng.gen_bool(0.3))
        }
    };
    let (h, w) = (side(rng), side(rng));
    let n = pick(rng, &[1, 2]);
    // The output must have at least one pixel.
    let out = |size: i64| if transposed { (size - 1) * s - 2 * p + k } else { (size + 2 * p - k) / s + 1 };
    if out(h) < 1 || out(w) < 1 || (!transposed && (h + 2 * p < k || w + 2 * p < k)) {
        return;
    }
    let mut x = randn(&[n, c_in, h, w]);
    let cl = rng.gen_bool(0.3);
    if cl {
        x = ops::channels_last(&x).unwrap();
    }
    let wt = if transposed { randn(&[c_in, c_out, k, k]) } else { randn(&[c_out, c_in, k, k]) } * 0.2;
    let b = rng.gen_bool(0.7).then(|| randn(&[c_out]));
    let relu = rng.gen_bool(0.3);
    let grad = rng.gen_bool(0.6);
    let (st, pd) = ([s, s], [p, p]);
    let case = format!(
        "{} x {:?} w {:?} stride {s} padding {p} bias {} relu {relu} grad {grad} channels_last {}",
        if transposed { "conv_transpose2d" } else { "conv2d" },
        x.size(),
        wt.size(),
        b.is_some(),
        cl
    );
    // Which custom path the arguments take (asked in the grad mode the call runs in).
    let ask = |f: &dyn Fn() -> bool| if grad { f() } else { tch::no_grad(f) };
    if transposed {
        paths.convt_k4s2 += u32::from(ask(&|| ops::is_k4s2_path(&x, &wt, b.as_ref(), true, st, pd)));
        paths.few_channel += u32::from(ask(&|| ops::is_few_channel_path(&x, &wt, b.as_ref(), true)));
    } else {
        paths.winograd += u32::from(ask(&|| ops::conv2d_is_winograd(&x, &wt, b.as_ref(), st, pd)));
        paths.conv_k4s2 += u32::from(ask(&|| ops::is_conv_k4s2_path(&x, &wt, b.as_ref(), st, pd)));
    }
    let ours = move |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        match (transposed, relu) {
            (false, false) => ops::conv2d(x, w, b, st, pd),
            (false, true) => ops::conv2d_relu(x, w, b, st, pd),
            (true, false) => ops::conv_transpose2d(x, w, b, st, pd),
            (true, true) => ops::conv_transpose2d_relu(x, w, b, st, pd),
        }
        .unwrap()
    };
    let reference = move |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        let y = if transposed {
            x.conv_transpose2d(w, b, st, pd, [0, 0], 1, [1, 1])
        } else {
            x.conv2d(w, b, st, pd, [1, 1], 1)
        };
        if relu {
            y.relu()
        } else {
            y
        }
    };
    compare(&case, &x, &wt, b.as_ref(), grad, &ours, &reference);
}

fn conv1d_case(rng: &mut StdRng) {
    let c_in = pick(rng, &[1, 8, 16, 32, 48]);
    let c_out = pick(rng, &[8, 16, 32, 48]);
    let k = pick(rng, &[1, 3, 5]);
    let dilation = pick(rng, &[1, 2, 4, 8, 32]);
    let padding = if rng.gen_bool(0.8) { dilation * (k - 1) / 2 } else { 0 };
    let t = rng.gen_range(1..=400);
    if t + 2 * padding < dilation * (k - 1) + 1 {
        return;
    }
    let x = randn(&[pick(rng, &[1, 2]), c_in, t]);
    let w = randn(&[c_out, c_in, k]) * 0.2;
    let b = rng.gen_bool(0.7).then(|| randn(&[c_out]));
    let grad = rng.gen_bool(0.4);
    let t_out = t + 2 * padding - dilation * (k - 1);
    let add = rng.gen_bool(0.5).then(|| randn(&[x.size()[0], c_out, t_out]));
    let case = format!(
        "conv1d x {:?} w {:?} padding {padding} dilation {dilation} bias {} add {} grad {grad}",
        x.size(),
        w.size(),
        b.is_some(),
        add.is_some()
    );
    let add2 = add.as_ref().map(|a| a.shallow_clone());
    let ours = move |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        ops::conv1d_add(x, w, b, padding, dilation, add.as_ref()).unwrap()
    };
    let reference = move |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        let y = x.conv1d(w, b, [1], [padding], [dilation], 1);
        match &add2 {
            Some(a) => y + a,
            None => y,
        }
    };
    compare(&case, &x, &w, b.as_ref(), grad, &ours, &reference);
}

fn linear_case(rng: &mut StdRng, paths: &mut Paths) {
    let transposed = rng.gen_bool(0.5);
    let k = pick(rng, &[1, 7, 64, 300, 1024]);
    let n = pick(rng, &[1, 5, 64, 257, 1024]);
    let rows: Vec<i64> = match rng.gen_range(0..6) {
        0 => vec![1],
        1 => vec![3],
        2 => vec![2, 2],
        3 => vec![40],
        4 => vec![64],
        _ => vec![1, 1],
    };
    let x = randn(&[rows.clone(), vec![k]].concat());
    let w = if transposed { randn(&[k, n]) } else { randn(&[n, k]) } * 0.1;
    let b = rng.gen_bool(0.7).then(|| randn(&[n]));
    let grad = rng.gen_bool(0.4);
    let case = format!(
        "linear transposed {transposed} x {:?} w {:?} bias {} grad {grad}",
        x.size(),
        w.size(),
        b.is_some()
    );
    let ask = |f: &dyn Fn() -> bool| if grad { f() } else { tch::no_grad(f) };
    paths.dnnl_linear += u32::from(ask(&|| ops::is_dnnl_linear(&x, &w, b.as_ref(), transposed)));
    let ours = move |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        if transposed {
            ops::linear_t(x, w, b).unwrap()
        } else {
            ops::linear(x, w, b).unwrap()
        }
    };
    let reference = move |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        if transposed {
            x.linear(&w.tr(), b)
        } else {
            x.linear(w, b)
        }
    };
    compare(&case, &x, &w, b.as_ref(), grad, &ours, &reference);
}

fn leaky_relu_case(rng: &mut StdRng) {
    let slope = pick(rng, &[0.0, 0.01, 0.2, 1.0]);
    let x = randn(&[rng.gen_range(1..=5), rng.gen_range(1..=40)]);
    let grad = rng.gen_bool(0.5);
    // (w and b are unused: a scalar weight keeps compare's signature)
    let w = Tensor::ones([1], (Kind::Float, Device::Cpu));
    let ours = move |x: &Tensor, w: &Tensor, _: Option<&Tensor>| ops::leaky_relu(x, slope).unwrap() * w;
    let reference =
        move |x: &Tensor, w: &Tensor, _: Option<&Tensor>| x.where_self(&x.gt(0.0), &(x * slope)) * w;
    compare(
        &format!("leaky_relu slope {slope} x {:?} grad {grad}", x.size()),
        &x,
        &w,
        None,
        grad,
        &ours,
        &reference,
    );
}

#[test]
fn custom_kernels_equal_libtorch_on_random_cases() {
    tch::manual_seed(0);
    let mut rng = StdRng::seed_from_u64(7);
    let mut paths = Paths::default();
    for _ in 0..cases() {
        let kind = rng.gen_range(0..5);
        paths.cases[kind] += 1;
        match kind {
            0 => conv2d_case(&mut rng, false, &mut paths),
            1 => conv2d_case(&mut rng, true, &mut paths),
            2 => conv1d_case(&mut rng),
            3 => linear_case(&mut rng, &mut paths),
            _ => leaky_relu_case(&mut rng),
        }
    }
    println!("{paths:?}");
    // Each custom path this CPU has ran at least once (none with ZOO_KERNELS=libtorch).
    if ops::libtorch_only() {
        return;
    }
    assert!(paths.winograd > 0 && paths.few_channel > 0 && paths.dnnl_linear > 0, "{paths:?}");
    if ops::gemv_available() {
        // (the AVX-512 kernels)
        assert!(paths.convt_k4s2 > 0 && paths.conv_k4s2 > 0, "{paths:?}");
    }
}
