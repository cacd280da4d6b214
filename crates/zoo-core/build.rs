//! zoo-core's build script: the workspace's rpath set-up (../build-rpath.rs), the presets of
//! the checkout's `models/` built into the library, then the C++ of csrc/ (libtorch operators
//! tch does not wrap) compiled against libtorch's headers.
use std::path::{Path, PathBuf};

#[path = "../build-rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
    embed_presets();
    for f in [
        "csrc/ops.cpp",
        "csrc/gemv.cpp",
        "csrc/gemv.h",
        "csrc/wino.cpp",
        "csrc/wino.h",
        "csrc/convt_k4s2.cpp",
        "csrc/convt_k4s2.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // torch-sys (`links = "tch"`) hands its direct dependents libtorch's lib folder.
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        panic!("torch-sys did not report libtorch's folder (DEP_TCH_LIBTORCH_LIB): see tools/setup.sh");
    };
    let root = lib.parent().map(PathBuf::from).unwrap_or_else(|| lib.clone());
    // The same C++ ABI as torch-sys's own C++ (the PyPI wheels use the new ABI).
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("csrc/ops.cpp");
    // at::parallel_for is inline OpenMP: without -fopenmp it runs serially. libtorch's own
    // libgomp (the one libtorch_cpu loads: one runtime, one thread pool, torch's thread count)
    // supplies the symbols; a libtorch without it (macOS: libomp) gets serial kernels.
    let gomp = "libgomp.so.1";
    if lib.join(gomp).is_file() {
        build.flag("-fopenmp");
        println!("cargo:rustc-link-lib=dylib:+verbatim={gomp}");
    }
    build.compile("zoo_csrc");
    // The matrix-vector kernel, the Winograd transforms and the 4x4 stride-2 transposed
    // convolution are optimised in every profile (tests run debug builds); they need no libtorch
    // headers.
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .opt_level(3)
        .flag("-std=c++17")
        .file("csrc/gemv.cpp")
        .file("csrc/wino.cpp")
        .file("csrc/convt_k4s2.cpp")
        .compile("zoo_kernels");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// Writes `$OUT_DIR/presets.rs`: every `models/<family>/<name>.json` of the checkout as
/// `(family, name, text)`, so a copied or installed binary still has its presets. A build from
/// a source tree without `models/` gets an empty table.
fn embed_presets() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut rows = Vec::new();
    if let Ok(families) = std::fs::read_dir(&models) {
        println!("cargo:rerun-if-changed={}", models.display());
        let mut families: Vec<PathBuf> =
            families.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        families.sort();
        for fam in families {
            let Some(family) = fam.file_name().and_then(|n| n.to_str()).map(String::from) else { continue };
            let Ok(entries) = std::fs::read_dir(&fam) else { continue };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            for f in files {
                let (Some(name), Ok(abs)) = (f.file_stem().and_then(|n| n.to_str()), f.canonicalize()) else {
                    continue;
                };
                println!("cargo:rerun-if-changed={}", f.display());
                rows.push(format!(
                    "    ({family:?}, {name:?}, include_str!({:?})),\n",
                    abs.display().to_string()
                ));
            }
        }
    }
    let text = format!(
        "/// The presets built into the library: (family, name, JSON text).\npub(crate) const BUILT_IN: &[(&str, &str, &str)] = &[\n{}];\n",
        rows.concat()
    );
    std::fs::write(out.join("presets.rs"), text).expect("writing $OUT_DIR/presets.rs");
}
