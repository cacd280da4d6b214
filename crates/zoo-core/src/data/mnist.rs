//! MNIST (and the datasets that copy its layout, e.g. Fashion-MNIST) from the IDX files.
//!
//! The IDX format (LeCun's original distribution): a big-endian header — two zero bytes, an
//! element-type byte (0x08 = u8), the number of dimensions — then one u32 per dimension, then the
//! data row-major. Files may be gzip-compressed or raw; both are recognised by their content.
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Magic number of an IDX file of u8 with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Which half of MNIST to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// 60,000 images (`train-*`).
    Train,
    /// 10,000 images (`t10k-*`).
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// One split of MNIST, held as bytes (47 MB for the training set; f32 would be four times that).
#[derive(Debug)]
pub struct Mnist {
    /// (N, 1, H, W) u8, 0 = background, 255 = ink; H = W = 28 for MNIST.
    pub images: Tensor,
    /// (N) i64, the digit 0..=9.
    pub labels: Tensor,
}

impl Mnist {
    /// Reads `<split>-images-idx3-ubyte` and `<split>-labels-idx1-ubyte` from `dir`, each as
    /// `.gz` or raw (the `.gz` is preferred when both exist), checking magic numbers, shapes and
    /// that there is one label per image.
    pub fn load(dir: &Path, split: Split) -> Result<Mnist> {
        let prefix = split.prefix();
        let images_path = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;

        let (magic, dims, pixels) = read_idx_with_magic(&images_path)?;
        if magic != IMAGES_MAGIC {
            return Err(Error::bad_file(
                &images_path,
                format!(
                    "bad magic number {magic:#010x}, expected {IMAGES_MAGIC:#010x} (u8 images, 3 dimensions)"
                ),
            ));
        }
        let (magic, label_dims, labels) = read_idx_with_magic(&labels_path)?;
        if magic != LABELS_MAGIC {
            return Err(Error::bad_file(
                &labels_path,
                format!(
                    "bad magic number {magic:#010x}, expected {LABELS_MAGIC:#010x} (u8 labels, 1 dimension)"
                ),
            ));
        }
        let (n, h, w) = (dims[0], dims[1], dims[2]);
        if label_dims[0] != n {
            return Err(Error::bad_file(
                &labels_path,
                format!("{} labels for {n} images in {}", label_dims[0], images_path.display()),
            ));
        }
        let images = Tensor::f_from_slice(&pixels)?.f_view([n as i64, 1, h as i64, w as i64])?;
        let labels = Tensor::f_from_slice(&labels)?.f_to_kind(Kind::Int64)?;
        Ok(Mnist { images, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.size().first().copied().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All images as f32 in [-1, 1]. Shapes: (N, 1, H, W).
    pub fn images_f32(&self) -> Tensor {
        self.images.to_kind(Kind::Float) / 127.5 - 1.0
    }

    /// The same dataset with every image padded with background to 32x32, the size UNets that
    /// halve the resolution three or more times need. Shapes: (N, 1, H, W) -> (N, 1, 32, 32).
    pub fn pad_to_32(&self) -> Result<Mnist> {
        let size = self.images.size();
        let [_, _, h, w] = size[..] else {
            return Err(Error::Shape(format!("pad_to_32: expected (N, 1, H, W) images, got {size:?}")));
        };
        if h > 32 || w > 32 {
            return Err(Error::Shape(format!("pad_to_32: images are already {h}x{w}")));
        }
        let (top, left) = ((32 - h) / 2, (32 - w) / 2);
        let images = self.images.f_constant_pad_nd([left, 32 - w - left, top, 32 - h - top])?;
        Ok(Mnist { images, labels: self.labels.shallow_clone() })
    }

    /// Images (B, 1, H, W) f32 in [-1, 1] and labels (B) i64 at `indices`.
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::Data(format!("MNIST index {bad} out of range for {n} images")));
        }
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::f_from_slice(&idx)?;
        let images = self.images.f_index_select(0, &idx)?.f_to_kind(Kind::Float)?;
        let images = images.f_div_scalar(127.5)?.f_sub_scalar(1.0)?;
        Ok((images, self.labels.f_index_select(0, &idx)?))
    }
}

/// `dir/name.gz` if it exists, else `dir/name`.
fn find_idx(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::Data(format!(
        "{}: no {name}.gz or {name} here; download MNIST into this folder",
        dir.display()
    )))
}

/// Reads an IDX file of u8 (gzip-compressed or raw): returns its dimensions and its data.
///
/// Errors name the file and say what is wrong: not IDX, an element type other than u8, a
/// truncated file (fewer bytes than the dimensions promise) or trailing bytes.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    read_idx_with_magic(path).map(|(_, dims, data)| (dims, data))
}

fn read_idx_with_magic(path: &Path) -> Result<(u32, Vec<usize>, Vec<u8>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut file = BufReader::new(file);
    let mut head = [0u8; 2];
    let got = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    // Prepend the sniffed bytes again, then decompress when they are the gzip signature.
    let sniffed = std::io::Cursor::new(head[..got].to_vec()).chain(file);
    let gzip = head[..got] == [0x1f, 0x8b];
    let mut reader: Box<dyn Read> = if gzip { Box::new(GzDecoder::new(sniffed)) } else { Box::new(sniffed) };
    let read_err = |e: std::io::Error| -> Error {
        if gzip {
            Error::bad_file(path, format!("corrupt or truncated gzip stream: {e}"))
        } else {
            Error::io(path, e)
        }
    };

    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(read_err)?;
    if got < 4 {
        return Err(Error::bad_file(path, format!("truncated: {got} bytes, too short for an IDX header")));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::bad_file(
            path,
            format!("bad magic number {:#010x}: not an IDX file", u32::from_be_bytes(magic)),
        ));
    }
    if magic[2] != 0x08 {
        return Err(Error::bad_file(
            path,
            format!("IDX element type {:#04x} is not supported, only u8 (0x08)", magic[2]),
        ));
    }
    let ndims = usize::from(magic[3]);
    if ndims == 0 {
        return Err(Error::bad_file(path, "IDX header has no dimensions"));
    }
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let got = read_up_to(&mut reader, &mut dim_bytes).map_err(read_err)?;
    if got < dim_bytes.len() {
        return Err(Error::bad_file(path, format!("truncated: header ends inside the {ndims} dimensions")));
    }
    let dims: Vec<usize> =
        dim_bytes.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| Error::bad_file(path, format!("dimensions {dims:?} are too large")))?;

    // Read through `take` so a header that promises more than the file holds cannot make us
    // allocate the promised size up front; one extra byte detects trailing data.
    let mut data = Vec::new();
    reader.take(expected as u64 + 1).read_to_end(&mut data).map_err(read_err)?;
    if data.len() < expected {
        return Err(Error::bad_file(
            path,
            format!("truncated: dimensions {dims:?} need {expected} data bytes, found {}", data.len()),
        ));
    }
    if data.len() > expected {
        return Err(Error::bad_file(
            path,
            format!("trailing bytes after the {expected} data bytes of {dims:?}"),
        ));
    }
    Ok((u32::from_be_bytes(magic), dims, data))
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Three 2x2 images whose pixels count up, labels 7, 0, 9.
    fn write_split(dir: &Path, prefix: &str, compress: bool) {
        let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
        let images = idx(IMAGES_MAGIC, &[3, 2, 2], &pixels);
        let labels = idx(LABELS_MAGIC, &[3], &[7, 0, 9]);
        let (images, labels, ext) =
            if compress { (gz(&images), gz(&labels), ".gz") } else { (images, labels, "") };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
    }

    fn check_small(m: &Mnist) {
        assert_eq!(m.images.size(), vec![3, 1, 2, 2]);
        assert_eq!(m.images.kind(), Kind::Uint8);
        assert_eq!(Vec::<i64>::try_from(&m.labels).unwrap(), vec![7, 0, 9]);
        assert_eq!(m.images.int64_value(&[1, 0, 1, 0]), 6 * 20);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn loads_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", false);
        write_split(dir.path(), "t10k", true);
        check_small(&Mnist::load(dir.path(), Split::Train).unwrap());
        check_small(&Mnist::load(dir.path(), Split::Test).unwrap());
        let (dims, data) = read_idx(&dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!(dims, vec![3, 2, 2]);
        assert_eq!(data.len(), 12);
    }

    #[test]
    fn f32_views() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", false);
        let m = Mnist::load(dir.path(), Split::Train).unwrap();
        let f = m.images_f32();
        assert_eq!(f.double_value(&[0, 0, 0, 0]), -1.0);
        assert!((f.double_value(&[2, 0, 1, 1]) - (220.0 / 127.5 - 1.0)).abs() < 1e-6);

        let p = m.pad_to_32().unwrap();
        assert_eq!(p.images.size(), vec![3, 1, 32, 32]);
        assert_eq!(p.images.int64_value(&[1, 0, 15, 15]), 4 * 20);
        assert_eq!(p.images.int64_value(&[1, 0, 0, 0]), 0);
        assert_eq!(p.images_f32().double_value(&[1, 0, 0, 0]), -1.0);

        let (x, y) = m.batch(&[2, 0]).unwrap();
        assert_eq!(x.size(), vec![2, 1, 2, 2]);
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), vec![9, 7]);
        assert!(m.batch(&[3]).is_err());
    }

    fn load_err(files: &[(&str, Vec<u8>)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let e = Mnist::load(dir.path(), Split::Train).unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        msg
    }

    #[test]
    fn error_paths_name_file_and_problem() {
        let pixels = vec![1u8; 12];
        let good_images = idx(IMAGES_MAGIC, &[3, 2, 2], &pixels);
        let good_labels = idx(LABELS_MAGIC, &[3], &[1, 2, 3]);
        let images = "train-images-idx3-ubyte";
        let labels = "train-labels-idx1-ubyte";

        // Truncated data, raw and gzip.
        let msg = load_err(&[
            (images, good_images[..good_images.len() - 1].to_vec()),
            (labels, good_labels.clone()),
        ]);
        assert!(msg.contains(images) && msg.contains("truncated"), "{msg}");
        let cut = gz(&good_images);
        let msg = load_err(&[
            ("train-images-idx3-ubyte.gz", cut[..cut.len() / 2].to_vec()),
            (labels, good_labels.clone()),
        ]);
        assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains("truncated"), "{msg}");
        // Truncated header.
        let msg = load_err(&[(images, good_images[..6].to_vec()), (labels, good_labels.clone())]);
        assert!(msg.contains("truncated"), "{msg}");

        // Labels file where the images should be.
        let msg = load_err(&[(images, good_labels.clone()), (labels, good_labels.clone())]);
        assert!(msg.contains(images) && msg.contains("bad magic"), "{msg}");
        // Not IDX at all.
        let msg = load_err(&[(images, b"PK\x03\x04 some zip".to_vec()), (labels, good_labels.clone())]);
        assert!(msg.contains("bad magic"), "{msg}");
        // Element type other than u8 (0x0D = f32).
        let msg = load_err(&[(images, idx(0x0D03, &[3, 2, 2], &[0; 48])), (labels, good_labels.clone())]);
        assert!(msg.contains("element type"), "{msg}");

        // Count mismatch.
        let msg = load_err(&[(images, good_images.clone()), (labels, idx(LABELS_MAGIC, &[2], &[1, 2]))]);
        assert!(msg.contains(labels) && msg.contains("2 labels for 3 images"), "{msg}");

        // Trailing bytes.
        let mut long = good_images.clone();
        long.push(0);
        let msg = load_err(&[(images, long), (labels, good_labels.clone())]);
        assert!(msg.contains("trailing"), "{msg}");

        // Missing file.
        let msg = load_err(&[(images, good_images.clone())]);
        assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");

        // A header that promises far more than the file holds is an error, not an allocation.
        let msg =
            load_err(&[(images, idx(IMAGES_MAGIC, &[u32::MAX, 28, 28], &[0; 10])), (labels, good_labels)]);
        assert!(msg.contains("truncated"), "{msg}");
    }
}
