//! Weights: safetensors files in and out of a `VarStore`, strictly.
//!
//! - Loading reports every missing key, unexpected key and shape mismatch by name, and keeps
//!   the dtype and device of the model's variables (tch's `VarStore::load` ignores unexpected
//!   keys and switches variables to the file's dtype; we do neither).
//! - A remap hook renames checkpoint keys to the model's names, or drops keys on purpose
//!   (e.g. buffers that a reference implementation saves but we compute).
//! - Sharded checkpoints (`*.safetensors.index.json`, as transformers and diffusers write them).
//! - Pickle files (.pt/.pth/.bin/.ckpt) are refused: unpickling runs code. The error names
//!   `tools/convert_to_safetensors.py`, which converts them in the project's .venv.
//! - Writes are atomic ([`crate::fsutil::atomic_write_with`]).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use tch::{nn::VarStore, Kind, Tensor};

use crate::fsutil::atomic_write_with;
use crate::{Error, Result};

/// What the remap hook says about a checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remap {
    /// Load the tensor into the variable of this name.
    To(String),
    /// Skip this key: the model does not keep it (say why where the hook is defined).
    Skip,
}

/// The identity remap.
pub fn keep_names(name: &str) -> Remap {
    Remap::To(name.to_string())
}

/// File endings of PyTorch pickle checkpoints.
const PICKLE_EXTENSIONS: &[&str] = &["pt", "pth", "bin", "ckpt", "pkl", "pickle"];

/// Refuses PyTorch pickle checkpoints, by file ending or by their first bytes (zip archive
/// of torch.save, or a raw pickle stream).
pub fn check_not_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
        return Err(Error::Pickle { path: path.to_path_buf() });
    }
    let mut head = [0u8; 4];
    if let Ok(mut f) = File::open(path) {
        use std::io::Read;
        if f.read_exact(&mut head).is_ok()
            && (head == *b"PK\x03\x04" || (head[0] == 0x80 && (2..=5).contains(&head[1])))
        {
            return Err(Error::Pickle { path: path.to_path_buf() });
        }
    }
    Ok(())
}

/// A safetensors file mapped into memory. Tensors are copied out on request.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
}

/// Name, dtype and shape of one tensor in a file, as the header gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl SafetensorsFile {
    /// Opens and validates a file: header, offsets and sizes are checked before any use.
    pub fn open(path: &Path) -> Result<Self> {
        check_not_pickle(path)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file changed by another process while we read it
        // would give wrong values, the usual caveat of memory-mapped checkpoints.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let f = SafetensorsFile { path: path.to_path_buf(), mmap };
        f.parse()?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.mmap).map_err(|e| describe(&self.path, self.mmap.len(), e))
    }

    /// Every tensor's name, dtype and shape, in file order.
    pub fn infos(&self) -> Result<Vec<TensorInfo>> {
        let (_, meta) =
            SafeTensors::read_metadata(&self.mmap).map_err(|e| describe(&self.path, self.mmap.len(), e))?;
        let mut v: Vec<_> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                (
                    info.data_offsets.0,
                    TensorInfo { name, dtype: format!("{:?}", info.dtype), shape: info.shape.clone() },
                )
            })
            .collect();
        v.sort_by_key(|(off, _)| *off);
        Ok(v.into_iter().map(|(_, i)| i).collect())
    }

    /// The free-form `__metadata__` of the header.
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        let (_, meta) =
            SafeTensors::read_metadata(&self.mmap).map_err(|e| describe(&self.path, self.mmap.len(), e))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    /// Copies one tensor out (CPU, the file's dtype).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let st = self.parse()?;
        let view = st.tensor(name).map_err(|e| describe(&self.path, self.mmap.len(), e))?;
        to_tensor(&self.path, name, &view)
    }

    /// Copies every tensor out (CPU, the file's dtypes).
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let st = self.parse()?;
        st.iter().map(|(n, v)| Ok((n.to_string(), to_tensor(&self.path, n, &v)?))).collect()
    }
}

fn describe(path: &Path, len: usize, e: SafeTensorError) -> Error {
    let msg = match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength if len < 8 => {
            format!("not a safetensors file: only {len} bytes, no header")
        }
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooLarge => {
            "not a safetensors file, or truncated: the header length is past the end of the file".into()
        }
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::JsonError(_) => {
            "corrupt safetensors header (not valid JSON of tensor entries)".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "truncated safetensors file: the tensor data is shorter than the header says".into()
        }
        SafeTensorError::TensorInvalidInfo | SafeTensorError::InvalidOffset(_) => {
            "corrupt safetensors file: a tensor's offsets do not match its dtype and shape".into()
        }
        SafeTensorError::ValidationOverflow => {
            "corrupt safetensors file: a tensor's shape is too large to exist (its size overflows)".into()
        }
        SafeTensorError::InvalidTensorView(dtype, shape, bytes) => {
            format!(
                "corrupt safetensors file: a {dtype:?} tensor of shape {shape:?} cannot hold {bytes} bytes"
            )
        }
        other => format!("bad safetensors file: {other:?}"),
    };
    Error::bad_file(path, msg)
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

fn to_tensor(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let kind = kind_of(view.dtype()).ok_or_else(|| {
        Error::bad_file(
            path,
            format!("tensor '{name}' has dtype {:?}, which zoo does not load", view.dtype()),
        )
    })?;
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?)
}

/// Loads every tensor of one safetensors file.
pub fn load(path: &Path) -> Result<Vec<(String, Tensor)>> {
    SafetensorsFile::open(path)?.tensors()
}

/// The safetensors files of a checkpoint. `path` may be
/// - a `.safetensors` file,
/// - a `*.safetensors.index.json` (the shards it names, in order),
/// - a folder holding one of `model.safetensors`, `diffusion_pytorch_model.safetensors`, an
///   index of either, or else exactly one `.safetensors` file.
pub fn weight_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.exists() {
        return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    if path.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".index.json") {
            return index_shards(path);
        }
        check_not_pickle(path)?;
        return Ok(vec![path.to_path_buf()]);
    }
    for stem in ["model", "diffusion_pytorch_model"] {
        let index = path.join(format!("{stem}.safetensors.index.json"));
        if index.is_file() {
            return index_shards(&index);
        }
        let single = path.join(format!("{stem}.safetensors"));
        if single.is_file() {
            return Ok(vec![single]);
        }
    }
    let mut found = Vec::new();
    let mut pickles = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let p = entry.map_err(|e| Error::io(path, e))?.path();
        match p.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => found.push(p),
            Some(e) if PICKLE_EXTENSIONS.contains(&e) => pickles.push(p),
            _ => {}
        }
    }
    found.sort();
    match (found.len(), pickles.first()) {
        (1, _) => Ok(found),
        (0, Some(p)) => Err(Error::Pickle { path: p.clone() }),
        (0, None) => Err(Error::bad_file(path, "no .safetensors weights in this folder")),
        (n, _) => Err(Error::bad_file(
            path,
            format!("{n} .safetensors files and no index.json: name the file to load"),
        )),
    }
}

fn index_shards(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let idx: Index = serde_json::from_str(&text).map_err(|e| {
        Error::bad_file(index, format!("not a safetensors index (needs \"weight_map\"): {e}"))
    })?;
    let dir = match index.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for shard in idx.weight_map.values() {
        let p = crate::fsutil::join_inside(dir, shard)
            .map_err(|msg| Error::bad_file(index, format!("shard outside the model folder: {msg}")))?;
        if !files.contains(&p) {
            files.push(p);
        }
    }
    files.sort();
    for p in &files {
        if !p.is_file() {
            return Err(Error::bad_file(index, format!("shard {} is missing", p.display())));
        }
    }
    Ok(files)
}

/// What a strict load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    pub loaded: usize,
    pub skipped: usize,
}

/// Loads a checkpoint (see [`weight_files`]) into `vs`, strictly: every variable must be
/// filled and every checkpoint key must be used or skipped by `remap`, with matching shapes.
/// Values are converted to each variable's dtype and device. Nothing is copied unless all fit.
pub fn load_into(vs: &VarStore, path: &Path, remap: &dyn Fn(&str) -> Remap) -> Result<LoadStats> {
    let paths = weight_files(path)?;
    let vars = vs.variables();
    // 1. Check names and shapes from the headers alone, before reading any tensor data.
    let files = paths.iter().map(|p| SafetensorsFile::open(p)).collect::<Result<Vec<_>>>()?;
    let mut targets: HashMap<(usize, String), Tensor> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let (mut unexpected, mut mismatched, mut skipped) = (Vec::new(), Vec::new(), 0);
    for (i, f) in files.iter().enumerate() {
        for info in f.infos()? {
            let name = match remap(&info.name) {
                Remap::Skip => {
                    skipped += 1;
                    continue;
                }
                Remap::To(n) => n,
            };
            let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            match vars.get(&name) {
                None => unexpected.push(info.name),
                Some(var) if var.size() != shape => {
                    mismatched.push(format!("{name}: model {:?}, file {shape:?}", var.size()));
                    seen.insert(name);
                }
                Some(var) => {
                    if !seen.insert(name.clone()) {
                        return Err(Error::Weights(format!(
                            "{}: two checkpoint keys load into '{name}'",
                            path.display()
                        )));
                    }
                    targets.insert((i, info.name), var.shallow_clone());
                }
            }
        }
    }
    let mut missing: Vec<String> = vars.keys().filter(|k| !seen.contains(*k)).cloned().collect();
    // Sorted, so the message is the same from run to run (file order is a hash map's).
    missing.sort();
    unexpected.sort();
    mismatched.sort();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        let mut parts = Vec::new();
        for (what, list) in [("missing", &missing), ("unexpected", &unexpected), ("wrong shape", &mismatched)]
        {
            if !list.is_empty() {
                parts.push(format!("{} {what} ({})", list.len(), name_list(list)));
            }
        }
        return Err(Error::Weights(format!(
            "{}: weights do not fit the model: {}",
            path.display(),
            parts.join("; ")
        )));
    }
    // 2. Copy tensor by tensor out of the mapped files, so at most one tensor is held twice.
    let loaded = targets.len();
    tch::no_grad(|| -> Result<()> {
        for (i, f) in files.iter().enumerate() {
            let st = f.parse()?;
            for (key, view) in st.iter() {
                if let Some(var) = targets.get(&(i, key.to_string())) {
                    let src = to_tensor(f.path(), key, &view)?;
                    // NaN weights would only surface later, as a torch error mid-generation.
                    if src.is_floating_point() && src.f_isnan()?.f_any()?.f_int64_value(&[])? != 0 {
                        return Err(Error::bad_file(
                            f.path(),
                            format!("tensor '{key}' holds NaN values: the weights are corrupt or came from a diverged run"),
                        ));
                    }
                    var.shallow_clone().f_copy_(&src)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(LoadStats { loaded, skipped })
}

fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", ... {} more", names.len() - SHOWN));
    }
    s
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn raw(name: &str, t: &Tensor) -> Result<Raw> {
    let kind = t.kind();
    let dtype = dtype_of(kind).ok_or_else(|| {
        Error::Shape(format!("tensor '{name}' has kind {kind:?}, which safetensors cannot store"))
    })?;
    let t = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Raw { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), data })
}

/// Writes tensors to a safetensors file atomically, with optional `__metadata__`.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let raws: Vec<(String, Raw)> =
        tensors.iter().map(|(n, t)| Ok((n.clone(), raw(n, t)?))).collect::<Result<_>>()?;
    let views: Vec<(&str, &Raw)> = raws.iter().map(|(n, r)| (n.as_str(), r)).collect();
    atomic_write_with(path, |tmp| {
        safetensors::serialize_to_file(views, &metadata, tmp)
            .map_err(|e| Error::bad_file(tmp, format!("writing safetensors: {e:?}")))
    })
}

/// What [`convert_floats`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    /// Tensors cast to the new dtype (integer and boolean tensors are copied as they are).
    pub converted: usize,
    pub tensors: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Rewrites the safetensors file `src` as `dst` with every floating-point tensor in `kind`
/// (f16 to ship half the bytes, f32 to undo it); integer tensors and the metadata are kept.
/// A value that does not fit `kind` (beyond f16's 65504) is refused, naming the tensor.
pub fn convert_floats(src: &Path, dst: &Path, kind: Kind) -> Result<Converted> {
    if !matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
        return Err(Error::Config(format!(
            "cannot convert weights to {kind:?}: give a floating-point dtype"
        )));
    }
    let file = SafetensorsFile::open(src)?;
    let metadata = file.metadata()?;
    let mut out = Vec::new();
    let mut converted = 0;
    for (name, t) in file.tensors()? {
        if t.is_floating_point() && t.kind() != kind {
            let c = t.f_to_kind(kind)?;
            let finite_before = t.f_isfinite()?.f_all()?.int64_value(&[]) != 0;
            let finite_after = c.f_isfinite()?.f_all()?.int64_value(&[]) != 0;
            if finite_before && !finite_after {
                return Err(Error::bad_file(
                    src,
                    format!("tensor '{name}' has values beyond the range of {kind:?}; keep it in f32"),
                ));
            }
            converted += 1;
            out.push((name, c));
        } else {
            out.push((name, t));
        }
    }
    let tensors = out.len();
    save(dst, &out, if metadata.is_empty() { None } else { Some(metadata) })?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(|e| Error::io(p, e));
    Ok(Converted { converted, tensors, bytes_before: size(src)?, bytes_after: size(dst)? })
}

/// Copies the model folder `src` to `dst` (which must not exist yet) with every
/// `.safetensors` file's floating-point tensors in `kind` and every other file as it is,
/// sub-folders included (a diffusers pipeline folder). Symbolic links are refused, so
/// nothing outside `src` is copied. Returns each converted file (its path in `dst`).
pub fn convert_folder(src: &Path, dst: &Path, kind: Kind) -> Result<Vec<(PathBuf, Converted)>> {
    if dst.exists() {
        return Err(Error::Config(format!("{} already exists; give a new folder", dst.display())));
    }
    let mut done = Vec::new();
    convert_tree(src, dst, kind, &mut done)?;
    if done.is_empty() {
        return Err(Error::bad_file(src, "no .safetensors file in this folder"));
    }
    Ok(done)
}

fn convert_tree(src: &Path, dst: &Path, kind: Kind, done: &mut Vec<(PathBuf, Converted)>) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(|e| Error::io(src, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(src, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ty = e.file_type().map_err(|err| Error::io(&from, err))?;
        if ty.is_symlink() {
            return Err(Error::bad_file(&from, "is a symbolic link; model folders are copied without links"));
        } else if ty.is_dir() {
            convert_tree(&from, &to, kind, done)?;
        } else if from.extension().is_some_and(|x| x == "safetensors") {
            let c = convert_floats(&from, &to, kind)?;
            done.push((to, c));
        } else {
            std::fs::copy(&from, &to).map_err(|err| Error::io(&to, err))?;
        }
    }
    Ok(())
}

/// Saves every variable of a VarStore under its name.
pub fn save_varstore(vs: &VarStore, path: &Path) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    save(path, &vars, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn model(vs: &VarStore) {
        let p = vs.root();
        let _ = p.sub("layer").var("weight", &[3, 2], nn::Init::Const(0.0));
        let _ = p.sub("layer").var("bias", &[3], nn::Init::Const(0.0));
    }

    fn tensors() -> Vec<(String, Tensor)> {
        vec![
            ("layer.weight".into(), Tensor::arange(6, (Kind::Float, Device::Cpu)).view([3, 2])),
            ("layer.bias".into(), Tensor::from_slice(&[1.0f32, 2.0, 3.0])),
        ]
    }

    #[test]
    fn round_trip_and_strict_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        save(&path, &tensors(), Some(meta.clone())).unwrap();
        let f = SafetensorsFile::open(&path).unwrap();
        assert_eq!(f.metadata().unwrap(), meta);
        let infos = f.infos().unwrap();
        assert_eq!(infos.iter().find(|i| i.name == "layer.weight").unwrap().shape, vec![3, 2]);
        assert_eq!(infos.iter().map(TensorInfo::numel).sum::<usize>(), 9);

        let mut vs = VarStore::new(Device::Cpu);
        model(&vs);
        vs.half();
        let stats = load_into(&vs, &path, &keep_names).unwrap();
        assert_eq!(stats, LoadStats { loaded: 2, skipped: 0 });
        let w = &vs.variables()["layer.weight"];
        assert_eq!(w.kind(), Kind::Half, "the model's dtype is kept");
        assert_eq!(
            Vec::<f32>::try_from(w.to_kind(Kind::Float).view([-1])).unwrap(),
            vec![0., 1., 2., 3., 4., 5.]
        );
        vs.float();
    }

    #[test]
    fn floats_convert_to_f16_and_back_keeping_integers_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (src, half, back) = (
            dir.path().join("a.safetensors"),
            dir.path().join("h.safetensors"),
            dir.path().join("b.safetensors"),
        );
        let mut t = tensors();
        t.push(("steps".into(), Tensor::from_slice(&[7i64, 70000])));
        let meta = HashMap::from([("note".to_string(), "kept".to_string())]);
        save(&src, &t, Some(meta.clone())).unwrap();
        let c = convert_floats(&src, &half, Kind::Half).unwrap();
        assert_eq!((c.converted, c.tensors), (2, 3));
        assert!(c.bytes_after < c.bytes_before, "{c:?}");
        let f = SafetensorsFile::open(&half).unwrap();
        assert_eq!(f.metadata().unwrap(), meta);
        let got: HashMap<String, Tensor> = f.tensors().unwrap().into_iter().collect();
        assert_eq!(got["layer.weight"].kind(), Kind::Half);
        assert_eq!(got["steps"].kind(), Kind::Int64, "integers are not converted");
        assert_eq!(Vec::<i64>::try_from(&got["steps"]).unwrap(), vec![7, 70000]);
        // Small integers are exact in f16, so the round trip gives the same values.
        assert_eq!(convert_floats(&half, &back, Kind::Float).unwrap().converted, 2);
        let vs = VarStore::new(Device::Cpu);
        model(&vs);
        let skip_steps = |n: &str| if n == "steps" { Remap::Skip } else { Remap::To(n.to_string()) };
        load_into(&vs, &back, &skip_steps).unwrap();
        assert_eq!(Vec::<f32>::try_from(&vs.variables()["layer.bias"]).unwrap(), vec![1.0, 2.0, 3.0]);

        // Beyond f16's range: refused, naming the tensor; integer dtypes are refused as targets.
        save(&src, &[("big".to_string(), Tensor::from_slice(&[1e6f32]))], None).unwrap();
        let e = convert_floats(&src, &half, Kind::Half).unwrap_err().to_string();
        assert!(e.contains("'big'") && e.contains("range"), "{e}");
        assert!(convert_floats(&src, &half, Kind::Int).is_err());
    }

    #[test]
    fn mismatches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut t = tensors();
        t[0].1 = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        t.push(("extra.weight".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu))));
        let _ = t.remove(1);
        save(&path, &t, None).unwrap();
        let vs = VarStore::new(Device::Cpu);
        model(&vs);
        let e = load_into(&vs, &path, &keep_names).unwrap_err().to_string();
        assert!(e.contains("1 missing (layer.bias)"), "{e}");
        assert!(e.contains("1 unexpected (extra.weight)"), "{e}");
        assert!(e.contains("1 wrong shape (layer.weight: model [3, 2], file [2, 3])"), "{e}");
        assert!(!e.contains('\n'));
        // Nothing was copied: the variables keep their initial zeros.
        assert_eq!(vs.variables()["layer.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn remap_renames_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut t: Vec<(String, Tensor)> =
            tensors().into_iter().map(|(n, t)| (format!("transformer.{n}"), t)).collect();
        t.push(("transformer.layer.attn_mask".into(), Tensor::ones([2], (Kind::Float, Device::Cpu))));
        save(&path, &t, None).unwrap();
        let vs = VarStore::new(Device::Cpu);
        model(&vs);
        let remap = |k: &str| {
            if k.ends_with("attn_mask") {
                Remap::Skip
            } else {
                Remap::To(k.trim_start_matches("transformer.").to_string())
            }
        };
        assert_eq!(load_into(&vs, &path, &remap).unwrap(), LoadStats { loaded: 2, skipped: 1 });
    }

    #[test]
    fn sharded_checkpoints_load() {
        let dir = tempfile::tempdir().unwrap();
        let t = tensors();
        save(&dir.path().join("model-00001-of-00002.safetensors"), &t[..1], None).unwrap();
        save(&dir.path().join("model-00002-of-00002.safetensors"), &t[1..], None).unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"metadata": {"total_size": 36}, "weight_map": {
                "layer.weight": "model-00001-of-00002.safetensors",
                "layer.bias": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let vs = VarStore::new(Device::Cpu);
        model(&vs);
        assert_eq!(load_into(&vs, dir.path(), &keep_names).unwrap().loaded, 2);
        assert_eq!(vs.variables()["layer.bias"].double_value(&[2]), 3.0);
        // An index may not pull in files from outside its folder.
        let model = dir.path().join("m");
        std::fs::create_dir(&model).unwrap();
        for shard in ["../model-00001-of-00002.safetensors", "/etc/passwd"] {
            let text = format!(r#"{{"weight_map": {{"layer.weight": "{shard}"}}}}"#);
            std::fs::write(model.join("model.safetensors.index.json"), text).unwrap();
            let err = weight_files(&model).unwrap_err().to_string();
            assert!(err.contains("model.safetensors.index.json") && err.contains("outside"), "{err}");
        }
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.safetensors");
        save(&good, &tensors(), None).unwrap();
        let bytes = std::fs::read(&good).unwrap();

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty.safetensors", vec![], "no header"),
            ("short.safetensors", bytes[..5].to_vec(), "no header"),
            ("trunc.safetensors", bytes[..bytes.len() - 7].to_vec(), "truncated"),
            (
                "huge.safetensors",
                {
                    let mut b = bytes.clone();
                    b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                    b
                },
                "header length",
            ),
            (
                "json.safetensors",
                {
                    let mut b = bytes.clone();
                    b[9] = b'#';
                    b
                },
                "corrupt safetensors header",
            ),
            (
                "overflow.safetensors",
                {
                    let header = br#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#;
                    let mut b = (header.len() as u64).to_le_bytes().to_vec();
                    b.extend_from_slice(header);
                    b.extend_from_slice(&[0; 4]);
                    b
                },
                "too large to exist",
            ),
            ("zip.safetensors", b"PK\x03\x04rest".to_vec(), "pickle"),
            ("model.bin", bytes.clone(), "convert_to_safetensors.py"),
        ];
        for (name, data, want) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            let e = SafetensorsFile::open(&p).err().unwrap_or_else(|| panic!("{name} opened")).to_string();
            assert!(e.contains(want), "{name}: {e}");
            assert!(e.contains(name), "{name}: {e}");
            assert!(!e.contains('\n'), "{name}: {e}");
        }
        let e = weight_files(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn nan_weights_are_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nan.safetensors");
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().zeros("w", &[3]);
        save(&p, &[("w".into(), Tensor::from_slice(&[1.0f32, f32::NAN, 2.0]))], None).unwrap();
        let e = load_into(&vs, &p, &keep_names).unwrap_err().to_string();
        assert!(e.contains("nan.safetensors") && e.contains("'w' holds NaN"), "{e}");
    }

    #[test]
    fn folder_lookup() {
        let dir = tempfile::tempdir().unwrap();
        assert!(weight_files(dir.path()).unwrap_err().to_string().contains("no .safetensors"));
        std::fs::write(dir.path().join("pytorch_model.bin"), b"x").unwrap();
        assert!(weight_files(dir.path()).unwrap_err().to_string().contains("convert_to_safetensors"));
        save(&dir.path().join("diffusion_pytorch_model.safetensors"), &tensors(), None).unwrap();
        assert_eq!(weight_files(dir.path()).unwrap().len(), 1);
    }
}
