//! Images as tensors: load, save, grids and the few transforms the datasets need.
//!
//! Convention across zoo: an image tensor is f32, (C, H, W) or (B, C, H, W), values in [-1, 1],
//! C = 1 (grey) or 3 (RGB). Saving rounds like torchvision's `save_image`, and `make_grid` lays
//! images out like `torchvision.utils.make_grid`, so our sample grids match the reference's
//! pixel for pixel.
use std::io::{Cursor, Write};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{ColorType, DynamicImage, GrayImage, ImageFormat, ImageReader, RgbImage};
use tch::{Device, Kind, Tensor};

use crate::fsutil::atomic_write;
use crate::{Error, Result};

/// Padding (pixels) between and around the images of a grid written by [`save_image`].
pub const GRID_PADDING: i64 = 2;
/// Value of the grid padding: black, as torchvision's default `pad_value = 0` in [0, 1] space.
pub const GRID_PAD_VALUE: f64 = -1.0;
/// JPEG quality for saved samples; the encoder default (75) visibly blurs small images.
const JPEG_QUALITY: u8 = 95;

/// Loads an image file as (C, H, W) f32 in [-1, 1]. Grey files (with or without alpha) give
/// C = 1; everything else gives C = 3, with any alpha channel dropped (not composited).
pub fn load_image(path: &Path) -> Result<Tensor> {
    let img = decode(path)?;
    if matches!(img.color(), ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16) {
        let (h, w) = dims(&img);
        hwc_to_tensor(img.to_luma32f().as_raw(), h, w, 1)
    } else {
        rgb_tensor(&img)
    }
}

/// Loads an image file as (3, H, W) f32 in [-1, 1], whatever its colour type.
pub fn load_image_rgb(path: &Path) -> Result<Tensor> {
    rgb_tensor(&decode(path)?)
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::bad_file(path, "not an image in a known format (PNG or JPEG)"));
    }
    match crate::error::contain_panic(|| reader.decode()) {
        Some(decoded) => decoded.map_err(|e| Error::bad_file(path, format!("cannot decode image: {e}"))),
        None => Err(Error::bad_file(path, "cannot decode image: the decoder failed on this corrupt file")),
    }
}

/// (H, W) of a decoded image.
fn dims(img: &DynamicImage) -> (i64, i64) {
    (i64::from(img.height()), i64::from(img.width()))
}

fn rgb_tensor(img: &DynamicImage) -> Result<Tensor> {
    let (h, w) = dims(img);
    hwc_to_tensor(img.to_rgb32f().as_raw(), h, w, 3)
}

/// Interleaved [0, 1] pixels (H, W, C) -> (C, H, W) in [-1, 1].
fn hwc_to_tensor(data: &[f32], h: i64, w: i64, c: i64) -> Result<Tensor> {
    let t = Tensor::f_from_slice(data)?.f_view([h, w, c])?.f_permute([2, 0, 1])?;
    Ok(t.f_contiguous()?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?)
}

/// Converts a (C, H, W) tensor in [-1, 1] to an 8-bit image (grey for C = 1, RGB for C = 3).
///
/// Values are mapped as torchvision's `save_image` does: `(x + 1) / 2 * 255 + 0.5`, clamped to
/// [0, 255] and truncated, so out-of-range values saturate and NaN becomes black.
pub fn tensor_to_image(t: &Tensor) -> Result<DynamicImage> {
    let size = t.size();
    let [c, h, w] = size[..] else {
        return Err(Error::Shape(format!("tensor_to_image: expected (C, H, W), got {size:?}")));
    };
    if c != 1 && c != 3 {
        return Err(Error::Shape(format!("tensor_to_image: expected 1 or 3 channels, got {c} in {size:?}")));
    }
    let (Ok(wu), Ok(hu)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(Error::Shape(format!("tensor_to_image: image too large: {size:?}")));
    };
    if h == 0 || w == 0 {
        return Err(Error::Shape(format!("tensor_to_image: empty image {size:?}")));
    }
    let bytes = t
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_nan_to_num(-1.0, None, None)?
        .f_add_scalar(1.0)?
        .f_mul_scalar(0.5 * 255.0)?
        .f_add_scalar(0.5)?
        .f_clamp(0.0, 255.0)?
        .f_to_kind(Kind::Uint8)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?;
    let numel = (c * h * w) as usize;
    let mut buf = vec![0u8; numel];
    bytes.f_copy_data_u8(&mut buf, numel)?;
    let img = if c == 1 {
        GrayImage::from_raw(wu, hu, buf).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(wu, hu, buf).map(DynamicImage::ImageRgb8)
    };
    // from_raw only fails when the buffer is too short, which the sizes above rule out.
    img.ok_or_else(|| Error::Shape(format!("tensor_to_image: buffer does not match {size:?}")))
}

/// Saves a (C, H, W) image, or a (B, C, H, W) batch as one grid of `ceil(sqrt(B))` images per
/// row (see [`make_grid`], with [`GRID_PADDING`] and [`GRID_PAD_VALUE`]).
///
/// The format follows the extension (`.png`, `.jpg`, `.jpeg`); the file is written to a temporary
/// file in the same folder and renamed, so a crash never leaves half an image.
pub fn save_image(t: &Tensor, path: &Path) -> Result<()> {
    image_format(path)?; // fail before any work on a bad name
    let img = match t.dim() {
        3 => tensor_to_image(t)?,
        4 => {
            let b = t.size()[0];
            let nrow = (b as f64).sqrt().ceil() as i64;
            tensor_to_image(&make_grid(t, nrow.max(1), GRID_PADDING, GRID_PAD_VALUE)?)?
        }
        _ => {
            return Err(Error::Shape(format!(
                "save_image: expected (C, H, W) or (B, C, H, W), got {:?}",
                t.size()
            )))
        }
    };
    save_picture(&img, path)
}

/// Saves a picture (e.g. a spectrogram image) as PNG or JPEG by the extension, atomically.
pub fn save_picture(img: &DynamicImage, path: &Path) -> Result<()> {
    let format = image_format(path)?;
    let mut bytes = Vec::new();
    let encoded = match format {
        ImageFormat::Jpeg => img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)),
        _ => img.write_to(Cursor::new(&mut bytes), format),
    };
    encoded.map_err(|e| Error::bad_file(path, format!("cannot encode image: {e}")))?;
    atomic_write(path, |w| w.write_all(&bytes).map_err(|e| Error::io(path, e)))
}

/// The image format a file name asks for (.png, .jpg, .jpeg), or an error saying which work;
/// commands call it before long work so a bad --out fails at once.
pub fn image_format(path: &Path) -> Result<ImageFormat> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
        _ => Err(Error::Config(format!(
            "{}: unknown image extension, use .png, .jpg or .jpeg",
            path.display()
        ))),
    }
}

/// Lays out a batch (B, C, H, W) as one image (C, H', W') with `nrow` images per row and
/// `padding` pixels of `pad_value` between and around them, like `torchvision.utils.make_grid`:
/// H' = rows * (H + padding) + padding, W' = min(nrow, B) * (W + padding) + padding.
///
/// As in torchvision, a batch of one is returned as that image without padding, and a
/// (C, H, W) input is returned as is. Unlike torchvision, grey batches stay one channel.
pub fn make_grid(images: &Tensor, nrow: i64, padding: i64, pad_value: f64) -> Result<Tensor> {
    if images.dim() == 3 {
        return Ok(images.shallow_clone());
    }
    let size = images.size();
    let [b, c, h, w] = size[..] else {
        return Err(Error::Shape(format!("make_grid: expected (B, C, H, W), got {size:?}")));
    };
    if b == 0 {
        return Err(Error::Shape("make_grid: empty batch".into()));
    }
    if nrow < 1 || padding < 0 {
        return Err(Error::Config(format!(
            "make_grid: need nrow >= 1 and padding >= 0, got {nrow} and {padding}"
        )));
    }
    if b == 1 {
        return Ok(images.f_select(0, 0)?);
    }
    let cols = nrow.min(b);
    let rows = (b + cols - 1) / cols;
    let (cell_h, cell_w) = (h + padding, w + padding);
    let grid = Tensor::f_full(
        [c, rows * cell_h + padding, cols * cell_w + padding],
        pad_value,
        (images.kind(), images.device()),
    )?;
    let images = images.f_detach()?;
    for k in 0..b {
        let (y, x) = (k / cols, k % cols);
        let mut cell = grid.f_narrow(1, y * cell_h + padding, h)?.f_narrow(2, x * cell_w + padding, w)?;
        cell.f_copy_(&images.f_select(0, k)?)?;
    }
    Ok(grid)
}

/// Puts frames of the same shape side by side, e.g. the steps of a denoising trajectory.
///
/// Shapes: T frames of (C, H, W) -> (C, H, T * W); T frames of (B, C, H, W) ->
/// (C, B * H, T * W), one row per batch item.
pub fn image_strip(images: &[Tensor]) -> Result<Tensor> {
    let first = images.first().ok_or_else(|| Error::Shape("image_strip: no frames".into()))?;
    let size = first.size();
    if let Some(other) = images.iter().find(|t| t.size() != size) {
        return Err(Error::Shape(format!(
            "image_strip: frames differ in shape: {size:?} and {:?}",
            other.size()
        )));
    }
    match size[..] {
        // (C, H, W) frames joined along W.
        [_, _, _] => Ok(Tensor::f_cat(images, 2)?),
        [b, c, h, w] => {
            // (B, C, H, T*W), then the batch stacked vertically.
            let rows = Tensor::f_cat(images, 3)?;
            let t = images.len() as i64;
            Ok(rows.f_permute([1, 0, 2, 3])?.f_reshape([c, b * h, t * w])?)
        }
        _ => {
            Err(Error::Shape(format!("image_strip: expected (C, H, W) or (B, C, H, W) frames, got {size:?}")))
        }
    }
}

/// Resizes (C, H, W) or (B, C, H, W) to (.., h, w) with bilinear interpolation, antialiased
/// when shrinking (libtorch's `_upsample_bilinear2d_aa`, as torchvision's `resize(antialias=True)`).
///
/// Floating inputs keep their kind (half precision is computed in f32); integer inputs give f32.
pub fn resize(t: &Tensor, h: i64, w: i64) -> Result<Tensor> {
    if h < 1 || w < 1 {
        return Err(Error::Config(format!("resize: target size must be positive, got {h}x{w}")));
    }
    let batched = match t.dim() {
        3 => t.f_unsqueeze(0)?,
        4 => t.shallow_clone(),
        _ => {
            return Err(Error::Shape(format!(
                "resize: expected (C, H, W) or (B, C, H, W), got {:?}",
                t.size()
            )))
        }
    };
    let kind = t.kind();
    let out_kind = if matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
        kind
    } else {
        Kind::Float
    };
    // The antialiased kernel has no CPU half-precision implementation.
    let work_kind = if matches!(kind, Kind::Float | Kind::Double) { kind } else { Kind::Float };
    let out = batched
        .f_to_kind(work_kind)?
        .f_internal_upsample_bilinear2d_aa([h, w], false, None, None)?
        .f_to_kind(out_kind)?;
    if t.dim() == 3 {
        Ok(out.f_squeeze_dim(0)?)
    } else {
        Ok(out)
    }
}

/// Crops the centre (.., h, w) out of (.., H, W), placing the window as torchvision's
/// `center_crop` does. Errors when the crop is larger than the image.
pub fn center_crop(t: &Tensor, h: i64, w: i64) -> Result<Tensor> {
    let size = t.size();
    if size.len() < 2 {
        return Err(Error::Shape(format!("center_crop: expected (.., H, W), got {size:?}")));
    }
    let (ih, iw) = (size[size.len() - 2], size[size.len() - 1]);
    if h < 1 || w < 1 || h > ih || w > iw {
        return Err(Error::Shape(format!("center_crop: cannot crop {h}x{w} out of {ih}x{iw}")));
    }
    let d = size.len() as i64;
    Ok(t.f_narrow(d - 2, crop_offset(ih - h), h)?.f_narrow(d - 1, crop_offset(iw - w), w)?)
}

/// torchvision computes `int(round(excess / 2))` with Python's round-half-to-even; match it so
/// odd margins land on the same pixel.
fn crop_offset(excess: i64) -> i64 {
    let q = excess / 2;
    if excess % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Mirrors (.., H, W) left to right.
pub fn hflip(t: &Tensor) -> Result<Tensor> {
    if t.dim() < 2 {
        return Err(Error::Shape(format!("hflip: expected (.., H, W), got {:?}", t.size())));
    }
    Ok(t.f_flip([-1])?)
}

/// Converts (C, H, W) or (B, C, H, W) between 1 and 3 channels: grey is repeated into RGB,
/// RGB becomes grey with the ITU-R 601 luma weights (as PIL's `convert("L")`).
pub fn to_channels(t: &Tensor, channels: i64) -> Result<Tensor> {
    let d = t.dim() as i64;
    if d != 3 && d != 4 {
        return Err(Error::Shape(format!(
            "to_channels: expected (C, H, W) or (B, C, H, W), got {:?}",
            t.size()
        )));
    }
    let c_dim = d - 3;
    let c = t.size()[c_dim as usize];
    match (c, channels) {
        (1, 1) | (3, 3) => Ok(t.shallow_clone()),
        (1, 3) => {
            let mut reps = vec![1; d as usize];
            reps[c_dim as usize] = 3;
            Ok(t.f_repeat(reps)?)
        }
        (3, 1) => {
            let mut wshape = vec![1; d as usize];
            wshape[c_dim as usize] = 3;
            let weights = Tensor::f_from_slice(&[0.299f32, 0.587, 0.114])?
                .f_view(wshape.as_slice())?
                .f_to_kind(t.kind())?
                .f_to_device(t.device())?;
            // The weights sum to 1, so this is the same in [-1, 1] as in [0, 1].
            Ok(t.f_mul(&weights)?.f_sum_dim_intlist(c_dim, true, t.kind())?)
        }
        _ => Err(Error::Shape(format!("to_channels: cannot convert {c} channels to {channels}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ramp(c: i64, h: i64, w: i64) -> Tensor {
        Tensor::arange(c * h * w, (Kind::Float, Device::Cpu)).view([c, h, w]) / (c * h * w - 1) as f64 * 2.0
            - 1.0
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn png_round_trip_is_exact_to_8_bits() {
        let dir = tempfile::tempdir().unwrap();
        for c in [1, 3] {
            let t = ramp(c, 5, 7);
            let path = dir.path().join(format!("x{c}.png"));
            save_image(&t, &path).unwrap();
            let back = load_image(&path).unwrap();
            assert_eq!(back.size(), vec![c, 5, 7]);
            // One 8-bit step in [-1, 1] is 2/255; rounding loses at most half of it.
            assert!(max_abs_diff(&t, &back) <= 1.0 / 255.0 + 1e-6);
            let rgb = load_image_rgb(&path).unwrap();
            assert_eq!(rgb.size(), vec![3, 5, 7]);
        }
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn rounding_matches_torchvision() {
        // torchvision: (x+1)/2*255 + 0.5, clamp, truncate.
        let t = Tensor::from_slice(&[-2.0f32, -1.0, 0.0, 1.0, 3.0, f32::NAN, -0.999]).view([1, 1, 7]);
        let img = tensor_to_image(&t).unwrap();
        assert_eq!(img.to_luma8().as_raw(), &vec![0u8, 0, 128, 255, 255, 0, 0]);
    }

    #[test]
    fn orientation_and_channel_order() {
        // Red top-left pixel, green top-right, blue bottom-left.
        let t = Tensor::full([3, 2, 2], -1.0, (Kind::Float, Device::Cpu));
        let _ = t.get(0).get(0).get(0).fill_(1.0);
        let _ = t.get(1).get(0).get(1).fill_(1.0);
        let _ = t.get(2).get(1).get(0).fill_(1.0);
        let img = tensor_to_image(&t).unwrap().to_rgb8();
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [0, 255, 0]);
        assert_eq!(img.get_pixel(0, 1).0, [0, 0, 255]);
    }

    #[test]
    fn rgba_drops_alpha_and_grey_alpha_stays_grey() {
        let dir = tempfile::tempdir().unwrap();
        let rgba = image::RgbaImage::from_raw(1, 1, vec![255, 0, 0, 0]).unwrap();
        let p = dir.path().join("rgba.png");
        rgba.save(&p).unwrap();
        let t = load_image(&p).unwrap();
        assert_eq!(t.size(), vec![3, 1, 1]);
        assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), vec![1.0, -1.0, -1.0]);

        let la = image::GrayAlphaImage::from_raw(1, 1, vec![255, 10]).unwrap();
        let p = dir.path().join("la.png");
        la.save(&p).unwrap();
        let t = load_image(&p).unwrap();
        assert_eq!(t.size(), vec![1, 1, 1]);
        assert_eq!(t.double_value(&[0, 0, 0]), 1.0);
    }

    #[test]
    fn jpeg_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::zeros([3, 16, 16], (Kind::Float, Device::Cpu));
        let p = dir.path().join("a.JPEG");
        save_image(&t, &p).unwrap();
        let back = load_image(&p).unwrap();
        assert_eq!(back.size(), vec![3, 16, 16]);
        assert!(max_abs_diff(&t, &back) < 0.05);
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.png");
        save_image(&ramp(3, 32, 32), &good).unwrap();
        let bytes = fs::read(&good).unwrap();

        let truncated = dir.path().join("truncated.png");
        fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let mut corrupt_bytes = bytes.clone();
        // Overwrite the IHDR chunk so the header checksum fails.
        corrupt_bytes[16..24].fill(0xff);
        let corrupt = dir.path().join("corrupt.png");
        fs::write(&corrupt, &corrupt_bytes).unwrap();
        let text = dir.path().join("text.png");
        fs::write(&text, b"hello, not an image").unwrap();
        let empty = dir.path().join("empty.png");
        fs::write(&empty, b"").unwrap();

        for p in [&truncated, &corrupt, &text, &empty] {
            let e = load_image(p).unwrap_err();
            assert!(matches!(e, Error::BadFile { .. }), "{p:?}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(p.file_name().unwrap().to_str().unwrap()), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        assert!(matches!(load_image(&dir.path().join("missing.png")), Err(Error::Io { .. })));
    }

    #[test]
    fn a_jpeg_that_panics_the_decoder_is_an_error() {
        // Found by the 10^6-input fuzz run: zune-jpeg 0.5.15 unwraps None in its AVX2 IDCT.
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/core/zune-jpeg-avx2-panic.jpg");
        match load_image(&p) {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("zune-jpeg-avx2-panic.jpg") && e.contains("cannot decode image"), "{e}");
            }
            // The panic is in the AVX2 path; elsewhere the decoder may make something of it.
            #[cfg(target_arch = "x86_64")]
            Ok(_) => assert!(!std::arch::is_x86_feature_detected!("avx2"), "a corrupt JPEG decoded"),
            #[cfg(not(target_arch = "x86_64"))]
            Ok(_) => {}
        }
        assert!(!crate::error::panic_is_contained());
    }

    #[test]
    fn save_rejects_bad_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let t = ramp(3, 4, 4);
        assert!(matches!(save_image(&t, &dir.path().join("a.bmp")), Err(Error::Config(_))));
        assert!(matches!(save_image(&t, &dir.path().join("noext")), Err(Error::Config(_))));
        let flat = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
        assert!(matches!(save_image(&flat, &dir.path().join("a.png")), Err(Error::Shape(_))));
        let two = Tensor::zeros([2, 4, 4], (Kind::Float, Device::Cpu));
        assert!(matches!(save_image(&two, &dir.path().join("a.png")), Err(Error::Shape(_))));
        assert!(!dir.path().join("a.png").exists());
        // Missing folders are made; a file in the way of one is an I/O error.
        save_image(&t, &dir.path().join("new/dir/a.png")).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(matches!(save_image(&t, &dir.path().join("file/a.png")), Err(Error::Io { .. })));
    }

    #[test]
    fn grid_layout_matches_torchvision() {
        // 5 images of 1x2x3, nrow 2 -> 3 rows x 2 cols, padding 1.
        let imgs =
            Tensor::arange(5, (Kind::Float, Device::Cpu)).view([5, 1, 1, 1]).expand([5, 1, 2, 3], false);
        let g = make_grid(&imgs, 2, 1, -1.0).unwrap();
        assert_eq!(g.size(), vec![1, 3 * 3 + 1, 2 * 4 + 1]);
        // Image k sits at row k / 2, column k % 2.
        for k in 0..5i64 {
            let (y, x) = (k / 2 * 3 + 1, k % 2 * 4 + 1);
            assert_eq!(g.double_value(&[0, y, x]), k as f64);
            assert_eq!(g.double_value(&[0, y + 1, x + 2]), k as f64);
        }
        // Padding and the empty sixth cell.
        assert_eq!(g.double_value(&[0, 0, 0]), -1.0);
        assert_eq!(g.double_value(&[0, 7, 5]), -1.0);
        // Fewer images than nrow: one row as wide as the batch.
        assert_eq!(make_grid(&imgs.narrow(0, 0, 3), 8, 2, 0.0).unwrap().size(), vec![1, 6, 3 * 5 + 2]);
        // One image: returned as is.
        assert_eq!(make_grid(&imgs.narrow(0, 0, 1), 8, 2, 0.0).unwrap().size(), vec![1, 2, 3]);
        assert!(make_grid(&imgs, 0, 2, 0.0).is_err());
        assert!(make_grid(&imgs.narrow(0, 0, 0), 2, 2, 0.0).is_err());
        assert!(make_grid(&Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)), 2, 2, 0.0).is_err());
    }

    #[test]
    fn saved_batch_is_a_square_grid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grid.png");
        save_image(&Tensor::zeros([5, 3, 4, 4], (Kind::Float, Device::Cpu)), &p).unwrap();
        let back = load_image(&p).unwrap();
        // ceil(sqrt(5)) = 3 per row, 2 rows.
        assert_eq!(back.size(), vec![3, 2 * 6 + 2, 3 * 6 + 2]);
    }

    #[test]
    fn strip_joins_frames() {
        let a = Tensor::zeros([3, 4, 5], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([3, 4, 5], (Kind::Float, Device::Cpu));
        let s = image_strip(&[a.shallow_clone(), b.shallow_clone()]).unwrap();
        assert_eq!(s.size(), vec![3, 4, 10]);
        assert_eq!(s.double_value(&[0, 0, 4]), 0.0);
        assert_eq!(s.double_value(&[0, 0, 5]), 1.0);

        // Batched frames: row i is item i's trajectory.
        let f0 = Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1, 1, 1]);
        let f1 = Tensor::from_slice(&[10.0f32, 11.0]).view([2, 1, 1, 1]);
        let s = image_strip(&[f0, f1]).unwrap();
        assert_eq!(s.size(), vec![1, 2, 2]);
        assert_eq!(Vec::<f32>::try_from(s.flatten(0, -1)).unwrap(), vec![0.0, 10.0, 1.0, 11.0]);

        assert!(image_strip(&[]).is_err());
        assert!(image_strip(&[a, Tensor::zeros([3, 4, 6], (Kind::Float, Device::Cpu))]).is_err());
    }

    #[test]
    fn resize_crop_flip() {
        let t = ramp(3, 8, 12);
        let small = resize(&t, 4, 6).unwrap();
        assert_eq!(small.size(), vec![3, 4, 6]);
        // Antialiased shrink of a ramp keeps its mean.
        assert!((small.mean(Kind::Float) - t.mean(Kind::Float)).abs().double_value(&[]) < 1e-5);
        assert_eq!(resize(&t.unsqueeze(0), 16, 24).unwrap().size(), vec![1, 3, 16, 24]);
        assert_eq!(resize(&t.to_kind(Kind::Uint8), 4, 4).unwrap().kind(), Kind::Float);
        assert!(resize(&t, 0, 4).is_err());
        assert!(resize(&t.flatten(0, -1), 4, 4).is_err());

        let c = center_crop(&t, 4, 6).unwrap();
        assert_eq!(c.size(), vec![3, 4, 6]);
        assert_eq!(c.double_value(&[0, 0, 0]), t.double_value(&[0, 2, 3]));
        assert!(center_crop(&t, 9, 4).is_err());
        // torchvision rounds half to even: excess 3 -> offset 2, 5 -> 2, 1 -> 0.
        assert_eq!([crop_offset(1), crop_offset(3), crop_offset(5), crop_offset(4)], [0, 2, 2, 2]);

        let f = hflip(&t).unwrap();
        assert_eq!(f.double_value(&[1, 2, 0]), t.double_value(&[1, 2, 11]));
        assert!(hflip(&Tensor::zeros([3], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn channel_conversion() {
        let rgb = Tensor::from_slice(&[1.0f32, -1.0, -1.0]).view([3, 1, 1]);
        let grey = to_channels(&rgb, 1).unwrap();
        assert_eq!(grey.size(), vec![1, 1, 1]);
        assert!((grey.double_value(&[0, 0, 0]) - (0.299 * 2.0 - 1.0)).abs() < 1e-6);
        let back = to_channels(&grey.unsqueeze(0), 3).unwrap();
        assert_eq!(back.size(), vec![1, 3, 1, 1]);
        assert!(to_channels(&rgb, 2).is_err());
    }
}
