//! Spectrogram pictures: a log-mel as an RGB image in matplotlib's viridis colormap.
//!
//! Viridis is perceptually uniform and reads in greyscale and for colour-blind eyes. The table
//! samples matplotlib's 256-entry `_viridis_data` at 33 evenly spaced points (k/32, the table
//! linearly interpolated there, rounded to 8 bits); interpolating between them gives each of
//! the 256 matplotlib colours to within 2 steps of 255 (within 1 step for all but 3).
use image::{Rgb, RgbImage};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

const VIRIDIS: [[u8; 3]; 33] = [
    [68, 1, 84],
    [71, 13, 96],
    [72, 24, 106],
    [72, 35, 116],
    [71, 45, 123],
    [69, 54, 129],
    [66, 64, 134],
    [63, 73, 137],
    [59, 82, 139],
    [55, 90, 141],
    [51, 99, 141],
    [47, 106, 142],
    [44, 114, 142],
    [41, 122, 142],
    [38, 129, 142],
    [35, 137, 142],
    [33, 144, 140],
    [31, 152, 139],
    [31, 159, 136],
    [33, 166, 133],
    [40, 174, 128],
    [49, 181, 123],
    [62, 188, 116],
    [76, 194, 108],
    [93, 201, 99],
    [110, 206, 88],
    [130, 211, 76],
    [150, 216, 63],
    [171, 220, 50],
    [192, 223, 36],
    [213, 226, 26],
    [234, 229, 26],
    [253, 231, 37],
];

/// The viridis colour of `t` in [0, 1] (clamped; NaN is the low end).
pub fn viridis(t: f64) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let frac = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    std::array::from_fn(|c| (f64::from(a[c]) + frac * (f64::from(b[c]) - f64::from(a[c]))).round() as u8)
}

/// Writes [`spectrogram_image`] of `mel` to `path` (PNG or JPEG by the extension, atomically).
pub fn save_spectrogram(mel: &Tensor, path: &std::path::Path) -> Result<()> {
    crate::image::save_picture(&image::DynamicImage::ImageRgb8(spectrogram_image(mel)?), path)
}

/// A (n_mels, frames) log-mel as a frames x n_mels picture: time runs left to right, the lowest
/// mel band is the bottom row, and colours span the finite values' min..max (a constant input is
/// all the low colour). Non-finite values take the low colour.
pub fn spectrogram_image(mel: &Tensor) -> Result<RgbImage> {
    let (n_mels, frames) = match mel.size()[..] {
        [m, f] if m > 0 && f > 0 => (m, f),
        ref s => {
            return Err(Error::Shape(format!(
                "spectrogram_image wants a non-empty (n_mels, frames) tensor, got {s:?}"
            )))
        }
    };
    let (width, height) = match (u32::try_from(frames), u32::try_from(n_mels)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(Error::Shape(format!("spectrogram of {n_mels} x {frames} is too large"))),
    };
    let flat = mel.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_reshape([-1])?;
    let v = Vec::<f32>::try_from(&flat)?;
    let (lo, hi) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let span = if hi > lo { f64::from(hi - lo) } else { f64::INFINITY };
    let mut img = RgbImage::new(width, height);
    for (y, row) in (0..height).rev().zip(v.chunks(width as usize)) {
        for (x, &val) in row.iter().enumerate() {
            let t = if val.is_finite() { f64::from(val - lo) / span } else { 0.0 };
            img.put_pixel(x as u32, y, Rgb(viridis(t)));
        }
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_middle() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        assert_eq!(viridis(0.5), [33, 144, 140]);
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
        // Brightness (green) rises monotonically, which keeps the map readable in grey.
        let g: Vec<u8> = (0..=100).map(|i| viridis(i as f64 / 100.0)[1]).collect();
        assert!(g.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn low_mels_at_the_bottom_time_left_to_right() {
        // 3 mels x 2 frames; mel 0 is loud in frame 0, mel 2 is loud in frame 1.
        let m = Tensor::from_slice(&[5.0f32, 0.0, 0.0, 0.0, 0.0, 5.0]).view([3, 2]);
        let img = spectrogram_image(&m).unwrap();
        assert_eq!(img.dimensions(), (2, 3));
        assert_eq!(img.get_pixel(0, 2).0, viridis(1.0));
        assert_eq!(img.get_pixel(1, 0).0, viridis(1.0));
        assert_eq!(img.get_pixel(1, 2).0, viridis(0.0));
        assert_eq!(img.get_pixel(0, 0).0, viridis(0.0));
    }

    #[test]
    fn constant_and_non_finite_inputs_and_bad_shapes() {
        let flat = Tensor::full([4, 3], -11.5, (Kind::Float, Device::Cpu));
        let img = spectrogram_image(&flat).unwrap();
        assert!(img.pixels().all(|p| p.0 == viridis(0.0)));
        let m = Tensor::from_slice(&[f32::NEG_INFINITY, 1.0, f32::NAN, 3.0]).view([2, 2]);
        let img = spectrogram_image(&m).unwrap();
        assert_eq!(img.get_pixel(1, 0).0, viridis(1.0));
        assert_eq!(img.get_pixel(0, 1).0, viridis(0.0));
        for bad in [
            Tensor::zeros([5], (Kind::Float, Device::Cpu)),
            Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
        ] {
            assert!(matches!(spectrogram_image(&bad), Err(Error::Shape(_))));
        }
    }
}
