//! A folder of images as a dataset, for unconditional image models (GANs, VAEs, diffusion).
//!
//! The transform is the usual one of diffusers' and the DCGAN examples' training scripts:
//! resize the shorter side, centre crop, optional random horizontal flip, scale to [-1, 1].
//! Images are decoded on each access; nothing is cached, so folders larger than memory work.
use std::path::{Path, PathBuf};

use rand::Rng;
use tch::Tensor;

use crate::image::{center_crop, hflip, load_image, resize, to_channels};
use crate::{Error, Result};

/// Extensions (lower case) that are listed as images.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How each image is turned into a tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolderOptions {
    /// Output (height, width).
    pub size: (i64, i64),
    /// Resize the shorter side to fit, then crop the centre (keeps the aspect ratio). When false,
    /// images are resized straight to `size`, stretching them if their aspect differs.
    pub center_crop: bool,
    /// Mirror each image left to right with probability 1/2.
    pub random_flip: bool,
    /// 1 (grey) or 3 (RGB); files are converted to this.
    pub channels: i64,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        ImageFolderOptions { size: (64, 64), center_crop: true, random_flip: false, channels: 3 }
    }
}

/// The PNG and JPEG files under a folder (recursively), in sorted path order so that an index
/// means the same file on every machine.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    paths: Vec<PathBuf>,
    options: ImageFolderOptions,
}

impl ImageFolder {
    /// Lists the images under `dir`. Errors when the options are invalid or there are no images.
    /// Files are not opened here, so a corrupt image is reported by [`ImageFolder::get`].
    pub fn open(dir: &Path, options: ImageFolderOptions) -> Result<ImageFolder> {
        let (h, w) = options.size;
        if h < 1 || w < 1 {
            return Err(Error::Config(format!("image folder: size must be positive, got {h}x{w}")));
        }
        if options.channels != 1 && options.channels != 3 {
            return Err(Error::Config(format!(
                "image folder: channels must be 1 or 3, got {}",
                options.channels
            )));
        }
        let mut paths = Vec::new();
        collect_images(dir, &mut paths)?;
        if paths.is_empty() {
            return Err(Error::Data(format!(
                "{}: no .png, .jpg or .jpeg files in this folder or below it",
                dir.display()
            )));
        }
        paths.sort();
        Ok(ImageFolder { root: dir.to_path_buf(), paths, options })
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Never true for an opened folder; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image files, sorted.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    pub fn options(&self) -> &ImageFolderOptions {
        &self.options
    }

    /// Image `i` after the transform. Shapes: (C, H, W) f32 in [-1, 1], (H, W) = `options.size`.
    pub fn get(&self, i: usize, rng: &mut impl Rng) -> Result<Tensor> {
        let path = self.paths.get(i).ok_or_else(|| {
            Error::Data(format!("image index {i} out of range for {} images", self.paths.len()))
        })?;
        let img = to_channels(&load_image(path)?, self.options.channels)?;
        let (th, tw) = self.options.size;
        let img = if self.options.center_crop {
            let size = img.size();
            let (h, w) = (size[1], size[2]);
            // Scale so both sides cover the target; floor on the long side as torchvision's
            // Resize(int) does, and max() guards the short side against float error.
            let scale = (th as f64 / h as f64).max(tw as f64 / w as f64);
            let nh = ((h as f64 * scale).floor() as i64).max(th);
            let nw = ((w as f64 * scale).floor() as i64).max(tw);
            let resized = if (nh, nw) == (h, w) { img } else { resize(&img, nh, nw)? };
            center_crop(&resized, th, tw)?
        } else if img.size()[1..] == [th, tw] {
            img
        } else {
            resize(&img, th, tw)?
        };
        if self.options.random_flip && rng.gen_bool(0.5) {
            hflip(&img)
        } else {
            Ok(img)
        }
    }

    /// The images at `indices`, stacked. Shapes: (B, C, H, W) f32 in [-1, 1].
    pub fn batch(&self, indices: &[usize], rng: &mut impl Rng) -> Result<Tensor> {
        if indices.is_empty() {
            return Err(Error::Data("image folder: empty batch".into()));
        }
        let images = indices.iter().map(|&i| self.get(i, rng)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_stack(&images, 0)?)
    }
}

/// Appends the image files under `dir`. Symlinked files are followed, symlinked folders are not
/// (a link to an ancestor would otherwise recurse forever).
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if file_type.is_dir() {
            collect_images(&path, out)?;
        } else if has_image_extension(&path) && (file_type.is_file() || path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A (w x h) RGB image: left half red, right half blue.
    fn two_tone(path: &Path, w: u32, h: u32) {
        let img = image::RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        img.save(path).unwrap();
    }

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        two_tone(&dir.path().join("b.png"), 40, 20);
        two_tone(&dir.path().join("a.PNG"), 16, 16);
        two_tone(&dir.path().join("sub").join("c.jpg"), 20, 30);
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        dir
    }

    #[test]
    fn lists_sorted_recursively_and_transforms() {
        let dir = folder();
        let opts = ImageFolderOptions { size: (8, 8), center_crop: true, random_flip: false, channels: 3 };
        let ds = ImageFolder::open(dir.path(), opts).unwrap();
        let names: Vec<_> =
            ds.paths().iter().map(|p| p.strip_prefix(dir.path()).unwrap().to_path_buf()).collect();
        assert_eq!(names, vec![PathBuf::from("a.PNG"), PathBuf::from("b.png"), PathBuf::from("sub/c.jpg")]);

        let mut rng = StdRng::seed_from_u64(0);
        let x = ds.batch(&[0, 1, 2], &mut rng).unwrap();
        assert_eq!(x.size(), vec![3, 3, 8, 8]);
        assert!(x.min().double_value(&[]) >= -1.0 - 1e-6 && x.max().double_value(&[]) <= 1.0 + 1e-6);
        // b.png (40x20) -> 16x8 -> centre 8x8: still red on the left, blue on the right.
        let b = x.get(1);
        assert!(b.double_value(&[0, 4, 0]) > 0.9 && b.double_value(&[2, 4, 0]) < -0.9);
        assert!(b.double_value(&[0, 4, 7]) < -0.9 && b.double_value(&[2, 4, 7]) > 0.9);
    }

    #[test]
    fn stretch_grey_and_flip() {
        let dir = folder();
        let opts = ImageFolderOptions { size: (4, 6), center_crop: false, random_flip: true, channels: 1 };
        let ds = ImageFolder::open(dir.path(), opts).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut left = Vec::new();
        for _ in 0..16 {
            let x = ds.get(1, &mut rng).unwrap();
            assert_eq!(x.size(), vec![1, 4, 6]);
            left.push(x.double_value(&[0, 0, 0]));
        }
        // Red is lighter than blue in grey; flips put either on the left.
        let red = 0.299 * 2.0 - 1.0;
        let blue = 0.114 * 2.0 - 1.0;
        assert!(left.iter().any(|&v| (v - red).abs() < 0.02), "{left:?}");
        assert!(left.iter().any(|&v| (v - blue).abs() < 0.02), "{left:?}");
        assert!(left.iter().all(|&v| (v - red).abs() < 0.02 || (v - blue).abs() < 0.02), "{left:?}");
    }

    #[test]
    fn errors() {
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("x.txt"), "").unwrap();
        let e = ImageFolder::open(empty.path(), ImageFolderOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Data(_)), "{e}");
        assert!(ImageFolder::open(&empty.path().join("missing"), ImageFolderOptions::default()).is_err());

        let dir = folder();
        let bad = ImageFolderOptions { channels: 2, ..Default::default() };
        assert!(matches!(ImageFolder::open(dir.path(), bad), Err(Error::Config(_))));
        let bad = ImageFolderOptions { size: (0, 4), ..Default::default() };
        assert!(matches!(ImageFolder::open(dir.path(), bad), Err(Error::Config(_))));

        std::fs::write(dir.path().join("broken.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
        let ds = ImageFolder::open(dir.path(), ImageFolderOptions::default()).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let broken = ds.paths().iter().position(|p| p.ends_with("broken.png")).unwrap();
        assert!(matches!(ds.get(broken, &mut rng), Err(Error::BadFile { .. })));
        assert!(matches!(ds.get(99, &mut rng), Err(Error::Data(_))));
        assert!(ds.batch(&[], &mut rng).is_err());
    }
}
