//! What the decoders share around attention: the KV cache, the positions and masks of one
//! forward call (left padding, sliding window), and the call into libtorch's fused
//! scaled-dot-product attention.
//!
//! Masks follow transformers: a query at cache index `i` sees key `j` when `j <= i`, the key
//! is not padding (`attention_mask[b, j] == 1`) and, with a sliding window `w`, `i - j < w`.
//! Position ids come from the padding mask (`cumsum(mask) - 1`), so a left-padded row gets the
//! positions it would have alone.
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Keys and values of every layer for the tokens seen so far: filled by a prefill forward,
/// then grown by one position per decoding step. Kept apart from the model, which stays
/// immutable and can serve several caches.
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
}

/// One layer's keys and values in buffers with room to grow: `(B, n_kv_heads, capacity, hs)`,
/// of which the first `len` positions are filled. Growing by doubling keeps a long generation
/// from copying the whole cache at every step.
struct LayerCache {
    k: Tensor,
    v: Tensor,
    len: i64,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache { layers: (0..n_layers).map(|_| None).collect() }
    }

    /// Positions cached so far (0 before the prefill).
    pub fn seq_len(&self) -> i64 {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |l| l.len)
    }

    /// Appends this step's keys and values `(B, nkv, T, hs)` to layer `layer` and returns all
    /// of them so far, `(B, nkv, past + T, hs)`.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::Input(format!("KV cache has no layer {layer}: made for another model")))?;
        let t = k.size()[2];
        match slot {
            None => {
                let cap = (2 * t).max(64);
                let mut shape = k.size();
                shape[2] = cap;
                let kb = Tensor::f_zeros(&shape, (k.kind(), k.device()))?;
                let vb = Tensor::f_zeros(&shape, (v.kind(), v.device()))?;
                kb.f_narrow(2, 0, t)?.f_copy_(k)?;
                vb.f_narrow(2, 0, t)?.f_copy_(v)?;
                *slot = Some(LayerCache { k: kb, v: vb, len: t });
            }
            Some(c) => {
                if c.k.size()[0] != k.size()[0] {
                    return Err(Error::Input(format!(
                        "KV cache holds a batch of {}, this step has {}",
                        c.k.size()[0],
                        k.size()[0]
                    )));
                }
                let cap = c.k.size()[2];
                if c.len + t > cap {
                    let new_cap = (2 * cap).max(c.len + t);
                    let grow = |b: &Tensor| -> Result<Tensor> {
                        let mut shape = b.size();
                        shape[2] = new_cap;
                        let nb = Tensor::f_zeros(&shape, (b.kind(), b.device()))?;
                        nb.f_narrow(2, 0, c.len)?.f_copy_(&b.f_narrow(2, 0, c.len)?)?;
                        Ok(nb)
                    };
                    c.k = grow(&c.k)?;
                    c.v = grow(&c.v)?;
                }
                c.k.f_narrow(2, c.len, t)?.f_copy_(k)?;
                c.v.f_narrow(2, c.len, t)?.f_copy_(v)?;
                c.len += t;
            }
        }
        let c = slot.as_ref().ok_or_else(|| Error::Input("KV cache slot vanished".into()))?;
        Ok((c.k.f_narrow(2, 0, c.len)?, c.v.f_narrow(2, 0, c.len)?))
    }
}

/// Positions and masks of one forward call, computed once and used by every layer.
pub(crate) struct AttnInputs {
    /// `(B, T)` int64 position ids.
    pub positions: Tensor,
    /// `(B, 1, T, S)` boolean mask for full-attention layers, or `None` when plain causal
    /// attention (`is_causal`) or no mask at all is exact.
    pub full: Option<Tensor>,
    /// The same for sliding-window layers (`None` when the model has none).
    pub sliding: Option<Tensor>,
    /// True when `full`/`sliding` is `None` and the call should pass `is_causal`: a first
    /// forward of T > 1 tokens without padding.
    pub causal: bool,
    pub sliding_causal: bool,
}

impl AttnInputs {
    /// `input_ids` (B, T); `attention_mask` (B, past + T) of 1 (token) and 0 (padding), or
    /// `None` for no padding; `past` positions already in the cache.
    pub fn new(
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        past: i64,
        sliding_window: Option<i64>,
    ) -> Result<Self> {
        let size = input_ids.size();
        let [b, t] = size[..] else {
            return Err(Error::Input(format!("input ids must be (batch, tokens), got {size:?}")));
        };
        if t == 0 {
            return Err(Error::Input("no input tokens".into()));
        }
        let s = past + t;
        let device = input_ids.device();
        let key_mask = match attention_mask {
            None => None,
            Some(m) => {
                if m.size() != [b, s] {
                    return Err(Error::Input(format!(
                        "attention mask must be (batch, past + new tokens) = [{b}, {s}], got {:?}",
                        m.size()
                    )));
                }
                let m = m.f_ne(0)?.f_to_device(device)?;
                // All ones is no padding: the cheaper paths below then apply.
                if m.f_all()?.f_int64_value(&[])? != 0 {
                    None
                } else {
                    Some(m)
                }
            }
        };
        let positions = match &key_mask {
            Some(m) => {
                let p =
                    m.f_to_kind(Kind::Int64)?.f_cumsum(-1, Kind::Int64)?.f_sub_scalar(1)?.f_clamp_min(0)?;
                p.f_narrow(1, past, t)?
            }
            None => Tensor::f_arange_start(past, s, (Kind::Int64, device))?
                .f_unsqueeze(0)?
                .f_expand([b, t], true)?,
        };
        let build = |window: Option<i64>| -> Result<(Option<Tensor>, bool)> {
            let windowed = window.is_some_and(|w| s > w);
            if key_mask.is_none() && !windowed {
                // Without padding or a window in reach, a first call is plain causal attention
                // and a call after a prefill (queries at the end) may see every key.
                return Ok(match (past, t) {
                    (0, _) => (None, true),
                    (_, 1) => (None, false),
                    _ => (Some(causal_mask(past, t, None, device)?.f_view([1, 1, t, s])?), false),
                });
            }
            let mut m = causal_mask(past, t, window, device)?.f_view([1, 1, t, s])?;
            if let Some(k) = &key_mask {
                m = m.f_logical_and(&k.f_view([b, 1, 1, s])?)?;
                // A padding query would see no key at all, and softmax over nothing is NaN;
                // NaN values times zero weights would then poison the real rows of later layers.
                // Letting every query see itself keeps them finite and changes no real row.
                let eye = Tensor::f_arange(t, (Kind::Int64, device))?
                    .f_add_scalar(past)?
                    .f_unsqueeze(1)?
                    .f_eq_tensor(&Tensor::f_arange(s, (Kind::Int64, device))?.f_unsqueeze(0)?)?;
                m = m.f_logical_or(&eye.f_view([1, 1, t, s])?)?;
            }
            Ok((Some(m), false))
        };
        let (full, causal) = build(None)?;
        let (sliding, sliding_causal) = match sliding_window {
            Some(w) => build(Some(w))?,
            None => (None, false),
        };
        Ok(AttnInputs { positions, full, sliding, causal, sliding_causal })
    }
}

/// `(T, S)` boolean: query `past + i` sees key `j` when `j <= past + i` and, with a window,
/// `past + i - j < window`.
fn causal_mask(past: i64, t: i64, window: Option<i64>, device: Device) -> Result<Tensor> {
    let q = Tensor::f_arange(t, (Kind::Int64, device))?.f_add_scalar(past)?.f_unsqueeze(1)?;
    let k = Tensor::f_arange(past + t, (Kind::Int64, device))?.f_unsqueeze(0)?;
    let mut m = k.f_le_tensor(&q)?;
    if let Some(w) = window {
        m = m.f_logical_and(&q.f_sub(&k)?.f_lt(w)?)?;
    }
    Ok(m)
}

/// Fused attention. Shapes: q (B, nh, T, hs), k and v (B, nkv, S, hs) with nh a multiple of
/// nkv (grouped-query attention) -> (B, nh, T, hs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    dropout: f64,
    scale: Option<f64>,
) -> Result<Tensor> {
    let gqa = q.size()[1] != k.size()[1];
    Ok(Tensor::f_scaled_dot_product_attention(q, k, v, mask, dropout, causal, scale, gqa)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bools(t: &Tensor) -> Vec<Vec<bool>> {
        let t = t.to_kind(Kind::Int64);
        let (r, c) = (t.size()[0], t.size()[1]);
        (0..r).map(|i| (0..c).map(|j| t.int64_value(&[i, j]) != 0).collect()).collect()
    }

    #[test]
    fn causal_and_window_masks() {
        let m = bools(&causal_mask(0, 3, None, Device::Cpu).unwrap());
        assert_eq!(m, [[true, false, false], [true, true, false], [true, true, true]]);
        // Two cached positions, one query at index 2, window 2: sees keys 1 and 2.
        let m = bools(&causal_mask(2, 1, Some(2), Device::Cpu).unwrap());
        assert_eq!(m, [[false, true, true]]);
    }

    #[test]
    fn left_padding_gives_positions_and_self_attention_for_pads() {
        let ids = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
        let mask = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1]).view([2, 3]);
        let a = AttnInputs::new(&ids, Some(&mask), 0, None).unwrap();
        assert_eq!(Vec::<i64>::try_from(a.positions.view([-1])).unwrap(), [0, 0, 1, 0, 1, 2]);
        let m = a.full.unwrap();
        assert_eq!(m.size(), [2, 1, 3, 3]);
        // Row 0: the pad sees only itself; real tokens never see the pad.
        assert_eq!(
            bools(&m.get(0).get(0)),
            [[true, false, false], [false, true, false], [false, true, true]]
        );
        assert_eq!(bools(&m.get(1).get(0)), bools(&causal_mask(0, 3, None, Device::Cpu).unwrap()));
        assert!(!a.causal);
    }

    #[test]
    fn no_padding_takes_the_fast_paths() {
        let ids = Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu));
        let ones = Tensor::ones([1, 4], (Kind::Int64, Device::Cpu));
        let a = AttnInputs::new(&ids, Some(&ones), 0, None).unwrap();
        assert!(a.full.is_none() && a.causal);
        let one = Tensor::zeros([1, 1], (Kind::Int64, Device::Cpu));
        let a = AttnInputs::new(&one, None, 4, None).unwrap();
        assert!(a.full.is_none() && !a.causal);
        assert_eq!(a.positions.int64_value(&[0, 0]), 4);
        // A window in reach needs a mask even without padding.
        let a = AttnInputs::new(&one, None, 4, Some(3)).unwrap();
        assert_eq!(bools(&a.sliding.unwrap().view([1, 5])), [[false, false, true, true, true]]);
    }

    #[test]
    fn bad_masks_are_errors() {
        let ids = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
        let mask = Tensor::ones([2, 4], (Kind::Int64, Device::Cpu));
        let e = AttnInputs::new(&ids, Some(&mask), 0, None).err().unwrap().to_string();
        assert!(e.contains("[2, 3]"), "{e}");
        let e =
            AttnInputs::new(&Tensor::zeros([3], (Kind::Int64, Device::Cpu)), None, 0, None).err().unwrap();
        assert!(e.to_string().contains("(batch, tokens)"));
    }

    #[test]
    fn cache_grows_past_its_capacity() {
        let mut c = KvCache::new(1);
        let step = |i: i64| Tensor::full([1, 2, 1, 3], i as f64, (Kind::Float, Device::Cpu));
        let first = Tensor::zeros([1, 2, 40, 3], (Kind::Float, Device::Cpu));
        let _ = c.append(0, &first, &first).unwrap();
        for i in 1..=100 {
            let (k, v) = c.append(0, &step(i), &step(-i)).unwrap();
            assert_eq!(k.size(), [1, 2, 40 + i, 3]);
            assert_eq!(v.double_value(&[0, 1, 39 + i, 2]), -(i as f64));
        }
        assert_eq!(c.seq_len(), 140);
        let (k, _) = c.append(0, &step(7), &step(7)).unwrap();
        // Values written before the buffer grew are intact.
        assert_eq!(k.double_value(&[0, 0, 40, 0]), 1.0);
        assert_eq!(k.double_value(&[0, 0, 139, 0]), 100.0);
        assert!(c.append(1, &first, &first).is_err());
    }
}
