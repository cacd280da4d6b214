//! Devices, dtypes and threads: the `--device`, `--dtype` and `--threads` flags of every command.
//!
//! CUDA: the torch wheel ships `libtorch_cuda.so`, but our binaries do not link it (see
//! crates/build-rpath.rs): loading it costs start-up time and hundreds of MB even on a machine
//! without a GPU. It is loaded with `dlopen` the first time a CUDA device is asked for, which runs
//! its static initialisers and registers the CUDA backend with libtorch, as linking would have.
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use tch::{Device, Kind};

use crate::{Error, Result};

/// A device as the user names it: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when a GPU and its driver are present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Mps,
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            "mps" => Ok(DeviceSpec::Mps),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceSpec::Cuda(i)),
                _ => Err(Error::Config(format!("unknown device '{s}': use auto, cpu, cuda, cuda:N or mps"))),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Mps => write!(f, "mps"),
        }
    }
}

impl DeviceSpec {
    /// The libtorch device, or an error saying why it cannot be had here.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(if cuda_device_count() > 0 { Device::Cuda(0) } else { Device::Cpu }),
            DeviceSpec::Cuda(i) => {
                let n = cuda_device_count();
                if n == 0 {
                    let why = match load_cuda() {
                        Err(e) => e.clone(),
                        Ok(()) => "no CUDA device found (is the NVIDIA driver loaded?)".to_string(),
                    };
                    Err(Error::Config(format!("--device {self}: {why}; use --device cpu")))
                } else if i >= n {
                    Err(Error::Config(format!(
                        "--device {self}: this machine has {n} CUDA device(s), cuda:0 to cuda:{}",
                        n - 1
                    )))
                } else {
                    Ok(Device::Cuda(i))
                }
            }
            DeviceSpec::Mps => {
                if cfg!(target_os = "macos") && tch::utils::has_mps() {
                    Ok(Device::Mps)
                } else {
                    Err(Error::Config(
                        "--device mps: Metal (MPS) is only available on Apple silicon builds of libtorch; use --device cpu".into(),
                    ))
                }
            }
        }
    }
}

/// Loads libtorch's CUDA backend once; later calls return the first outcome.
///
/// Fails with a reason when the libtorch build has no CUDA library or when no NVIDIA driver is
/// installed (checked first, since loading the CUDA libraries alone costs ~0.15 s and ~400 MB).
pub fn load_cuda() -> Result<(), &'static String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(load_cuda_once).as_ref().map(|_| ())
}

fn load_cuda_once() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("CUDA loading is implemented for Linux only".into());
    }
    if !dl::can_open("libcuda.so.1") {
        return Err("no NVIDIA driver (libcuda.so.1) on this machine".into());
    }
    // The executable's rpath names libtorch's folder, so a bare name resolves to the wheel's
    // copy; the folder of the loaded libc10.so is the fallback (e.g. for a moved binary).
    let mut names = vec!["libtorch_cuda.so".to_string()];
    if let Some(dir) = dl::loaded_library_dir("libc10.so") {
        names.push(format!("{dir}/libtorch_cuda.so"));
    }
    let mut last = String::new();
    for name in &names {
        match dl::open_global(name) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(format!("this libtorch has no usable CUDA library ({last})"))
}

/// The version of the libtorch this process runs on, e.g. "2.13.0+cu130", read from the torch
/// package that holds the loaded libtorch (its `version.py`), so it reports what is really loaded.
pub fn libtorch_version() -> Option<String> {
    let _ = tch::Tensor::zeros([1], (Kind::Float, Device::Cpu)); // make sure libtorch is mapped
    let lib = dl::loaded_library_dir("libtorch_cpu.so")?;
    let text = std::fs::read_to_string(std::path::Path::new(&lib).join("../version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__"))
        .map(|v| v.trim_start_matches([' ', '=']).trim_matches(['\'', '"', ' ']).to_string())
}

/// Number of CUDA devices, loading the CUDA backend if a driver is present.
pub fn cuda_device_count() -> usize {
    if load_cuda().is_err() {
        return 0;
    }
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

mod dl {
    use std::ffi::{CStr, CString};

    pub fn can_open(name: &str) -> bool {
        let Ok(c) = CString::new(name) else { return false };
        // SAFETY: dlopen with a valid C string; the handle is released at once.
        unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
            if h.is_null() {
                return false;
            }
            libc::dlclose(h);
        }
        true
    }

    /// Opens a library for good, with its symbols visible to later loads (libtorch's
    /// registries find the CUDA hooks through them).
    pub fn open_global(name: &str) -> Result<(), String> {
        let c = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: dlopen with a valid C string; the handle is kept open on purpose.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a thread-local C string or null.
            let msg = unsafe {
                let e = libc::dlerror();
                if e.is_null() {
                    "dlopen failed".to_string()
                } else {
                    CStr::from_ptr(e).to_string_lossy().into_owned()
                }
            };
            return Err(msg);
        }
        Ok(())
    }

    /// The folder of a shared library already mapped into this process.
    pub fn loaded_library_dir(file_name: &str) -> Option<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.rsplit('/').next() == Some(file_name))
            .and_then(|p| p.rsplit_once('/').map(|(d, _)| d.to_string()))
    }
}

/// The floating-point type of a model's weights and activations: `--dtype f32|f16|bf16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DType {
    #[default]
    F32,
    F16,
    Bf16,
}

impl DType {
    pub fn kind(self) -> Kind {
        match self {
            DType::F32 => Kind::Float,
            DType::F16 => Kind::Half,
            DType::Bf16 => Kind::BFloat16,
        }
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(DType::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            other => Err(Error::Config(format!("unknown dtype '{other}': use f32, f16 or bf16"))),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        })
    }
}

/// Sets libtorch's intra-op thread count; 0 keeps libtorch's default (one per core).
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n = i32::try_from(n).map_err(|_| Error::Config(format!("--threads {n} is too large")))?;
    tch::set_num_threads(n);
    Ok(())
}

/// libtorch's intra-op thread count.
pub fn threads() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("AUTO".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("mps".parse::<DeviceSpec>().unwrap(), DeviceSpec::Mps);
        for bad in ["", "cuda:", "cuda:x", "tpu", "cuda:-1"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("unknown device"), "{bad}: {e}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cpu_and_auto_resolve_here() {
        assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), Device::Cpu);
        let auto = DeviceSpec::Auto.resolve().unwrap();
        assert_eq!(auto == Device::Cpu, cuda_device_count() == 0);
    }

    #[test]
    fn missing_cuda_is_a_clear_error() {
        if cuda_device_count() > 0 {
            return; // a GPU machine: nothing to check here
        }
        let e = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
        assert!(e.starts_with("--device cuda:0: "), "{e}");
        assert!(e.ends_with("use --device cpu"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn parses_dtypes() {
        assert_eq!("bf16".parse::<DType>().unwrap().kind(), Kind::BFloat16);
        assert_eq!("F16".parse::<DType>().unwrap().kind(), Kind::Half);
        assert_eq!("f32".parse::<DType>().unwrap().kind(), Kind::Float);
        assert!("f8".parse::<DType>().is_err());
    }

    #[test]
    fn reports_the_loaded_libtorch_version() {
        let v = libtorch_version().expect("version.py next to libtorch");
        assert!(v.starts_with("2.13.0"), "{v}");
    }

    #[test]
    fn finds_loaded_libtorch() {
        let _ = tch::Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let dir = dl::loaded_library_dir("libc10.so").expect("libc10.so is mapped");
        assert!(std::path::Path::new(&dir).join("libc10.so").exists());
    }
}
