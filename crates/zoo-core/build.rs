//! zoo-core's build script: the workspace's rpath set-up (../build-rpath.rs), then the C++ of
//! csrc/ (libtorch operators tch does not wrap) compiled against libtorch's headers.
use std::path::PathBuf;

#[path = "../build-rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
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
