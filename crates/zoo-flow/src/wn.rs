//! WaveGlow's WaveNet-like conditioner `WN` (NVIDIA/waveglow `glow.py`): the network inside each
//! affine coupling.
//!
//! `start` (1x1 conv) lifts x_a to `n_channels`; each of `n_layers` layers adds a dilated conv of
//! the running signal (`in_layers.i`, dilation 2^i, "same" padding) to its slice of the
//! conditioning projection (`cond_layer`, one 1x1 conv for all layers), gates it with
//! tanh * sigmoid, and a 1x1 conv (`res_skip_layers.i`) splits the result into a residual
//! (added to the running signal) and a skip (summed into the output; the last layer has only a
//! skip). `end` (1x1 conv, zero-initialised so every coupling starts as the identity) maps the
//! skip sum to (b, log s).
//!
//! NVIDIA wraps every conv but `end` in weight norm; `tools/convert_waveglow.py` folds it
//! (weight = g v / |v|), so here they are plain convs with the same names.
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::layers::Conditioner;
use crate::{Error, Result};

/// `WN_config` of WaveGlow's config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WnConfig {
    pub n_layers: i64,
    pub n_channels: i64,
    pub kernel_size: i64,
}

impl WnConfig {
    pub fn validate(&self) -> Result<()> {
        if self.n_layers < 1 || self.n_channels < 1 || self.kernel_size < 1 {
            return Err(Error::Config(format!("WN_config: sizes must be positive, got {self:?}")));
        }
        // NVIDIA asserts both: odd kernels keep "same" padding symmetric.
        if self.kernel_size % 2 == 0 {
            return Err(Error::Config(format!(
                "WN_config: kernel_size must be odd, got {}",
                self.kernel_size
            )));
        }
        if self.n_channels % 2 != 0 {
            return Err(Error::Config(format!(
                "WN_config: n_channels must be even, got {}",
                self.n_channels
            )));
        }
        Ok(())
    }
}

/// A 1-D convolution with its padding and dilation (tch's `Conv1D` keeps them private).
pub(crate) struct Conv1d {
    pub ws: Tensor,
    pub bs: Option<Tensor>,
    padding: i64,
    dilation: i64,
}

impl Conv1d {
    /// Variables `weight` (out, in, k) and `bias` (out), initialised as PyTorch's Conv1d.
    pub fn new(p: nn::Path, c_in: i64, c_out: i64, k: i64, dilation: i64, padding: i64) -> Self {
        let cfg = nn::ConvConfig { dilation, padding, ..Default::default() };
        let conv = nn::conv1d(p, c_in, c_out, k, cfg);
        Conv1d { ws: conv.ws, bs: conv.bs, padding, dilation }
    }

    /// Shapes: (B, in, T) -> (B, out, T'). zoo_core's conv1d: Winograd for the dilated
    /// kernel-3 layers when vocoding.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(zoo_core::ops::conv1d(x, &self.ws, self.bs.as_ref(), self.padding, self.dilation)?)
    }

    /// forward(x) + add (+ extra_bias), in one pass where the Winograd path runs.
    pub fn forward_add(&self, x: &Tensor, add: &Tensor, extra_bias: Option<&Tensor>) -> Result<Tensor> {
        let bias = match (&self.bs, extra_bias) {
            (Some(b), Some(e)) => Some(b.f_add(e)?),
            (Some(b), None) => Some(b.shallow_clone()),
            (None, e) => e.map(|e| e.shallow_clone()),
        };
        Ok(zoo_core::ops::conv1d_add(x, &self.ws, bias.as_ref(), self.padding, self.dilation, Some(add))?)
    }
}

/// The WaveNet-like conditioner of one WaveGlow coupling.
pub struct Wn {
    start: Conv1d,
    end: Conv1d,
    cond_layer: Conv1d,
    in_layers: Vec<Conv1d>,
    res_skip_layers: Vec<Conv1d>,
    n_channels: i64,
    n_in: i64,
    n_cond: i64,
}

impl Wn {
    /// `n_in` channels of x_a, `n_cond` conditioning channels (WaveGlow: n_mel_channels *
    /// n_group). The output has 2 n_in channels.
    pub fn new(p: nn::Path, n_in: i64, n_cond: i64, cfg: &WnConfig) -> Result<Self> {
        cfg.validate()?;
        if n_in < 1 || n_cond < 1 {
            return Err(Error::Config(format!(
                "WN needs input and conditioning channels, got {n_in} and {n_cond}"
            )));
        }
        let h = cfg.n_channels;
        let start = Conv1d::new(&p / "start", n_in, h, 1, 1, 0);
        let end = Conv1d::new(&p / "end", h, 2 * n_in, 1, 1, 0);
        tch::no_grad(|| -> Result<()> {
            let _ = end.ws.shallow_clone().f_zero_()?;
            if let Some(b) = &end.bs {
                let _ = b.shallow_clone().f_zero_()?;
            }
            Ok(())
        })?;
        let cond_layer = Conv1d::new(&p / "cond_layer", n_cond, 2 * h * cfg.n_layers, 1, 1, 0);
        let mut in_layers = Vec::new();
        let mut res_skip_layers = Vec::new();
        for i in 0..cfg.n_layers {
            let dilation = 1i64 << i;
            let padding = (cfg.kernel_size * dilation - dilation) / 2;
            in_layers.push(Conv1d::new(&p / "in_layers" / i, h, 2 * h, cfg.kernel_size, dilation, padding));
            // the last layer needs no residual
            let out = if i < cfg.n_layers - 1 { 2 * h } else { h };
            res_skip_layers.push(Conv1d::new(&p / "res_skip_layers" / i, h, out, 1, 1, 0));
        }
        Ok(Wn { start, end, cond_layer, in_layers, res_skip_layers, n_channels: h, n_in, n_cond })
    }
}

impl Conditioner for Wn {
    /// Shapes: x_a (B, n_in, T), cond (B, n_cond, T) -> (B, 2 n_in, T): [b; log s].
    fn forward(&self, x_a: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let cond = cond.ok_or_else(|| Error::Input("WN needs a conditioning input".into()))?;
        let (xs, cs) = (x_a.size(), cond.size());
        if xs.len() != 3 || cs.len() != 3 || xs[1] != self.n_in || cs[1] != self.n_cond || xs[2] != cs[2] {
            return Err(Error::Input(format!(
                "WN: expected x (B, {}, T) and cond (B, {}, T), got {xs:?} and {cs:?}",
                self.n_in, self.n_cond
            )));
        }
        let h = self.n_channels;
        let n_layers = self.in_layers.len() as i64;
        // 1. lift the input, project the conditioning for all layers at once: (B, 2 h L, T)
        let mut audio = self.start.forward(x_a)?;
        // (its bias joins each in-layer's below: one pass less over the largest tensor)
        let spect = zoo_core::ops::conv1d(cond, &self.cond_layer.ws, None, 0, 1)?;
        let mut output: Option<Tensor> = None;
        for (i, (inl, rs)) in self.in_layers.iter().zip(&self.res_skip_layers).enumerate() {
            let i = i as i64;
            // 2. gated activation of the dilated conv plus this layer's conditioning slice
            // (added as the conv writes its output)
            let cond_bias = match &self.cond_layer.bs {
                Some(b) => Some(b.f_narrow(0, i * 2 * h, 2 * h)?),
                None => None,
            };
            let in_act =
                inl.forward_add(&audio, &spect.f_narrow(1, i * 2 * h, 2 * h)?, cond_bias.as_ref())?;
            let acts = in_act.f_narrow(1, 0, h)?.f_tanh()?.f_mul(&in_act.f_narrow(1, h, h)?.f_sigmoid()?)?;
            // 3. residual to the running signal, skip to the output
            let res_skip = rs.forward(&acts)?;
            let skip = if i < n_layers - 1 {
                audio = audio.f_add(&res_skip.f_narrow(1, 0, h)?)?;
                res_skip.f_narrow(1, h, h)?
            } else {
                res_skip
            };
            output = Some(match output {
                None => skip,
                Some(o) => o.f_add(&skip)?,
            });
        }
        let output = output.ok_or_else(|| Error::Config("WN with no layers".into()))?;
        self.end.forward(&output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::tests::{brute_logdet, max_diff};
    use crate::layers::{AffineCoupling, Flow};
    use tch::{nn::VarStore, Device, Kind};

    fn cfg() -> WnConfig {
        WnConfig { n_layers: 3, n_channels: 8, kernel_size: 3 }
    }

    #[test]
    fn starts_as_identity_and_checks_shapes() {
        let vs = VarStore::new(Device::Cpu);
        let wn = Wn::new(vs.root(), 2, 5, &cfg()).unwrap();
        let x = Tensor::randn([2, 2, 16], (Kind::Float, Device::Cpu));
        let c = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
        let out = wn.forward(&x, Some(&c)).unwrap();
        assert_eq!(out.size(), vec![2, 4, 16]);
        // zero-initialised end: a coupling starts as the identity
        assert_eq!(out.abs().max().double_value(&[]), 0.0);
        assert!(wn.forward(&x, None).is_err());
        assert!(wn.forward(&x, Some(&c.narrow(2, 0, 15))).is_err());
        assert!(wn.forward(&x, Some(&c.narrow(1, 0, 4))).is_err());
        let names: Vec<String> = vs.variables().into_keys().collect();
        for n in
            ["start.weight", "end.bias", "cond_layer.weight", "in_layers.2.weight", "res_skip_layers.2.bias"]
        {
            assert!(names.iter().any(|k| k == n), "{n} not in {names:?}");
        }
        assert_eq!(vs.variables()["res_skip_layers.2.weight"].size(), vec![8, 8, 1]);
        assert_eq!(vs.variables()["res_skip_layers.1.weight"].size(), vec![16, 8, 1]);
        assert_eq!(vs.variables()["in_layers.2.weight"].size(), vec![16, 8, 3]);
        for bad in [
            WnConfig { kernel_size: 2, ..cfg() },
            WnConfig { n_channels: 7, ..cfg() },
            WnConfig { n_layers: 0, ..cfg() },
        ] {
            assert!(Wn::new(VarStore::new(Device::Cpu).root(), 2, 5, &bad).is_err());
        }
    }

    #[test]
    fn wn_coupling_inverts_and_logdet_matches_brute_force() {
        let mut vs = VarStore::new(Device::Cpu);
        let wn = Wn::new(vs.root(), 2, 3, &cfg()).unwrap();
        vs.double();
        // randomise `end` so the coupling does something
        tch::no_grad(|| {
            for (name, v) in vs.variables() {
                if name.starts_with("end.") {
                    v.shallow_clone().f_copy_(&(Tensor::randn_like(&v) * 0.3)).unwrap();
                }
            }
        });
        let layer = AffineCoupling::new(wn, 4).unwrap();
        let x = Tensor::randn([2, 4, 5], (Kind::Double, Device::Cpu));
        let c = Tensor::randn([2, 3, 5], (Kind::Double, Device::Cpu));
        let (z, ld) = layer.forward(&x, Some(&c)).unwrap();
        assert!(max_diff(&layer.inverse(&z, Some(&c)).unwrap(), &x) < 1e-10);
        let c0 = c.narrow(0, 0, 1);
        let brute = brute_logdet(&|t| layer.forward(t, Some(&c0)).unwrap().0, &x.narrow(0, 0, 1));
        assert!((ld.double_value(&[0]) - brute).abs() < 1e-8);
    }
}
