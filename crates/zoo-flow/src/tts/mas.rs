//! Monotonic alignment search (MAS, Glow-TTS, Kim et al. 2020, section 2.3): the most likely
//! hard alignment of text tokens to mel frames.
//!
//! An alignment gives every mel frame j exactly one token a(j), starting at token 0, ending at
//! the last token, and moving on by at most one token per frame: a(0) = 0,
//! a(T_mel - 1) = T_text - 1, a(j + 1) - a(j) in {0, 1}. So every token gets at least one frame.
//! MAS finds the alignment that maximises sum_j log_p[a(j), j] by dynamic programming:
//!
//! ```text
//! Q[i, j] = log_p[i, j] + max(Q[i, j - 1], Q[i - 1, j - 1]),   Q[0, 0] = log_p[0, 0]
//! ```
//!
//! then walks back from (T_text - 1, T_mel - 1), moving to the previous token wherever that
//! predecessor scored higher (ties stay on the same token, as the reference does). O(T_text T_mel)
//! per example on the CPU; the reference (jaywalnut310/glow-tts `monotonic_align`) does the same
//! in Cython.
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// The best alignment of one example: the token of each frame, and its score
/// sum_j values[a(j) * t_mel + j]. `values` is (t_text, t_mel), row-major.
/// Needs 1 <= t_text <= t_mel.
pub fn maximum_path(values: &[f64], t_text: usize, t_mel: usize) -> Result<(Vec<usize>, f64)> {
    if t_text == 0 || t_mel < t_text {
        return Err(Error::Input(format!(
            "alignment search: {t_text} text tokens cannot be aligned to {t_mel} mel frames (every \
             token needs at least one frame)"
        )));
    }
    if values.len() < t_text * t_mel {
        return Err(Error::Input(format!(
            "alignment search: {} values for {t_text} x {t_mel}",
            values.len()
        )));
    }
    let neg = f64::NEG_INFINITY;
    // q[i * t_mel + j]: the best score of a path through (i, j). Token i is reachable at frame j
    // only if i <= j (earlier tokens need a frame each) and t_text - i <= t_mel - j (later ones too).
    let mut q = vec![neg; t_text * t_mel];
    for j in 0..t_mel {
        let lo = (j + t_text).saturating_sub(t_mel);
        for i in lo..t_text.min(j + 1) {
            let best_prev = if j == 0 {
                0.0
            } else {
                let stay = q[i * t_mel + j - 1];
                let advance = if i > 0 { q[(i - 1) * t_mel + j - 1] } else { neg };
                stay.max(advance)
            };
            q[i * t_mel + j] = values[i * t_mel + j] + best_prev;
        }
    }
    let score = q[(t_text - 1) * t_mel + t_mel - 1];
    let mut path = vec![0; t_mel];
    let mut i = t_text - 1;
    for j in (0..t_mel).rev() {
        path[j] = i;
        if j > 0 && i > 0 && (i == j || q[(i - 1) * t_mel + j - 1] > q[i * t_mel + j - 1]) {
            i -= 1;
        }
    }
    Ok((path, score))
}

/// Batched MAS. Shapes: log_p (B, T_text, T_mel), text_lengths (B), mel_lengths (B) ->
/// a 0/1 path (B, T_text, T_mel) with path[b, i, j] = 1 where frame j is token i's, zero outside
/// the lengths; on log_p's device, in log_p's kind, outside the autograd graph.
pub fn monotonic_alignment_search(
    log_p: &Tensor,
    text_lengths: &Tensor,
    mel_lengths: &Tensor,
) -> Result<Tensor> {
    let [b, t_text, t_mel] = log_p.size()[..] else {
        return Err(Error::Input(format!(
            "alignment search: log_p must be (B, T_text, T_mel), got {:?}",
            log_p.size()
        )));
    };
    let lengths = |t: &Tensor, what: &str, max: i64| -> Result<Vec<i64>> {
        if t.size() != [b] {
            return Err(Error::Input(format!("alignment search: {what} must be ({b}), got {:?}", t.size())));
        }
        let v = Vec::<i64>::try_from(&t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?)?;
        if let Some(bad) = v.iter().find(|&&l| l < 1 || l > max) {
            return Err(Error::Input(format!("alignment search: {what} {bad} outside 1..={max}")));
        }
        Ok(v)
    };
    let tl = lengths(text_lengths, "text length", t_text)?;
    let ml = lengths(mel_lengths, "mel length", t_mel)?;
    let values = Vec::<f64>::try_from(
        &log_p.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_reshape([-1])?,
    )?;
    let (t_text, t_mel) = (t_text as usize, t_mel as usize);
    let mut out = vec![0f32; b as usize * t_text * t_mel];
    for e in 0..b as usize {
        let (n_text, n_mel) = (tl[e] as usize, ml[e] as usize);
        // This example's (n_text, n_mel) corner, packed.
        let base = e * t_text * t_mel;
        let mut v = Vec::with_capacity(n_text * n_mel);
        for i in 0..n_text {
            v.extend_from_slice(&values[base + i * t_mel..base + i * t_mel + n_mel]);
        }
        let (path, _) = maximum_path(&v, n_text, n_mel).map_err(|err| match err {
            Error::Input(msg) => Error::Input(format!("example {e}: {msg}")),
            other => other,
        })?;
        for (j, &i) in path.iter().enumerate() {
            out[base + i * t_mel + j] = 1.0;
        }
    }
    Ok(Tensor::f_from_slice(&out)?
        .f_reshape([b, t_text as i64, t_mel as i64])?
        .f_to_kind(log_p.kind())?
        .f_to_device(log_p.device())?)
}

/// Frames per token of a path. Shapes: (B, T_text, T_mel) -> (B, T_text).
pub fn durations(path: &Tensor) -> Result<Tensor> {
    Ok(path.f_sum_dim_intlist([2i64].as_slice(), false, path.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every monotonic alignment of t_text tokens to t_mel frames (each token >= 1 frame):
    /// the compositions of t_mel into t_text positive parts.
    fn all_alignments(t_text: usize, t_mel: usize) -> Vec<Vec<usize>> {
        fn go(token: usize, t_text: usize, left: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if token == t_text - 1 {
                let mut p = cur.clone();
                p.extend(std::iter::repeat_n(token, left));
                out.push(p);
                return;
            }
            // Leave at least one frame for each later token.
            for d in 1..=left - (t_text - 1 - token) {
                let n = cur.len();
                cur.extend(std::iter::repeat_n(token, d));
                go(token + 1, t_text, left - d, cur, out);
                cur.truncate(n);
            }
        }
        let mut out = Vec::new();
        go(0, t_text, t_mel, &mut Vec::new(), &mut out);
        out
    }

    fn score(v: &[f64], t_mel: usize, path: &[usize]) -> f64 {
        path.iter().enumerate().map(|(j, &i)| v[i * t_mel + j]).sum()
    }

    fn binomial(n: usize, k: usize) -> usize {
        (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
    }

    #[test]
    fn matches_brute_force_on_every_small_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        for t_text in 1..=4 {
            for t_mel in t_text..=7 {
                let all = all_alignments(t_text, t_mel);
                assert_eq!(all.len(), binomial(t_mel - 1, t_text - 1), "{t_text}x{t_mel}");
                for _ in 0..20 {
                    let v: Vec<f64> = (0..t_text * t_mel).map(|_| rng.gen_range(-5.0..1.0)).collect();
                    let best = all
                        .iter()
                        .max_by(|a, b| score(&v, t_mel, a).total_cmp(&score(&v, t_mel, b)))
                        .unwrap();
                    let (path, s) = maximum_path(&v, t_text, t_mel).unwrap();
                    assert_eq!(&path, best, "{t_text}x{t_mel}: {v:?}");
                    assert!((s - score(&v, t_mel, best)).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn batched_search_respects_lengths() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (b, t_text, t_mel) = (5usize, 4usize, 7usize);
        let lens: Vec<(usize, usize)> = vec![(4, 7), (1, 3), (3, 3), (2, 6), (4, 5)];
        // Padding holds large values that would win if the lengths were ignored.
        let v: Vec<f32> = (0..b * t_text * t_mel).map(|_| rng.gen_range(-5.0..1.0)).collect();
        let mut padded = v.clone();
        for (e, &(nt, nm)) in lens.iter().enumerate() {
            for i in 0..t_text {
                for j in 0..t_mel {
                    if i >= nt || j >= nm {
                        padded[(e * t_text + i) * t_mel + j] = 100.0;
                    }
                }
            }
        }
        let log_p = Tensor::from_slice(&padded).view([b as i64, t_text as i64, t_mel as i64]);
        let tl = Tensor::from_slice(&lens.iter().map(|l| l.0 as i64).collect::<Vec<_>>());
        let ml = Tensor::from_slice(&lens.iter().map(|l| l.1 as i64).collect::<Vec<_>>());
        let path = monotonic_alignment_search(&log_p, &tl, &ml).unwrap();
        assert_eq!(path.size(), vec![b as i64, t_text as i64, t_mel as i64]);
        assert_eq!(path.kind(), Kind::Float);
        let dur = durations(&path).unwrap();
        for (e, &(nt, nm)) in lens.iter().enumerate() {
            // The same as the example alone, brute force.
            let corner: Vec<f64> = (0..nt)
                .flat_map(|i| (0..nm).map(move |j| (i, j)))
                .map(|(i, j)| f64::from(v[(e * t_text + i) * t_mel + j]))
                .collect();
            let best = all_alignments(nt, nm)
                .into_iter()
                .max_by(|a, c| score(&corner, nm, a).total_cmp(&score(&corner, nm, c)))
                .unwrap();
            for j in 0..t_mel {
                let col: Vec<f64> =
                    (0..t_text).map(|i| path.double_value(&[e as i64, i as i64, j as i64])).collect();
                if j < nm {
                    let mut want = vec![0.0; t_text];
                    want[best[j]] = 1.0;
                    assert_eq!(col, want, "example {e} frame {j}");
                } else {
                    assert!(col.iter().all(|&x| x == 0.0), "example {e} padding frame {j}");
                }
            }
            let d = Vec::<f32>::try_from(&dur.get(e as i64)).unwrap();
            assert_eq!(d.iter().sum::<f32>() as usize, nm);
            assert!(d[..nt].iter().all(|&x| x >= 1.0) && d[nt..].iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn impossible_alignments_and_bad_shapes_are_errors() {
        assert!(maximum_path(&[0.0; 6], 3, 2).is_err());
        assert!(maximum_path(&[], 0, 2).is_err());
        assert!(maximum_path(&[0.0; 3], 2, 2).is_err());
        let log_p = Tensor::zeros([2, 3, 4], (Kind::Float, Device::Cpu));
        let (ok_t, ok_m) = (Tensor::from_slice(&[3i64, 2]), Tensor::from_slice(&[4i64, 4]));
        assert!(monotonic_alignment_search(&log_p, &ok_t, &ok_m).is_ok());
        let cases = [
            (Tensor::from_slice(&[3i64, 2]), Tensor::from_slice(&[4i64, 1]), "example 1"),
            (Tensor::from_slice(&[0i64, 2]), ok_m.shallow_clone(), "text length 0"),
            (ok_t.shallow_clone(), Tensor::from_slice(&[4i64, 5]), "mel length 5"),
            (Tensor::from_slice(&[3i64]), ok_m.shallow_clone(), "must be (2)"),
        ];
        for (tl, ml, word) in cases {
            match monotonic_alignment_search(&log_p, &tl, &ml) {
                Err(Error::Input(msg)) => assert!(msg.contains(word), "{msg}"),
                other => panic!("{other:?}"),
            }
        }
        let flat = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
        assert!(monotonic_alignment_search(&flat, &ok_t, &ok_m).is_err());
    }
}
