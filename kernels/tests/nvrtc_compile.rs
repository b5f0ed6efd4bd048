//! Every CUDA kernel compiles with NVRTC to PTX for sm_80 and sm_90 — no GPU needed.
//!
//! `scripts/test.sh` installs NVRTC 13.0 from PyPI (`scripts/fetch-nvrtc.sh`) and puts it
//! on `LD_LIBRARY_PATH`; without NVRTC this test fails unless `MARQUEE_SKIP_NVRTC=1`.

use marquee_kernels::cuda::{compile, nvrtc_present, SOURCES};

/// Highest PTX ISA a CUDA 13.0 driver loads.
const DRIVER_PTX_ISA: (u32, u32) = (9, 0);

fn ptx_isa(ptx: &str) -> (u32, u32) {
    let line = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .expect("PTX without a .version line");
    let (major, minor) = line.trim().split_once('.').expect("version major.minor");
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc_present() {
        if std::env::var("MARQUEE_SKIP_NVRTC").as_deref() == Ok("1") {
            eprintln!("NVRTC not found; skipped (MARQUEE_SKIP_NVRTC=1)");
            return;
        }
        panic!(
            "NVRTC (libnvrtc.so.13) not found: run scripts/fetch-nvrtc.sh and put the \
             directory it prints on LD_LIBRARY_PATH (scripts/test.sh does both)"
        );
    }
    let mut compiled = 0;
    for source in SOURCES {
        for arch in ["compute_80", "compute_90"] {
            let ptx = compile(source, arch)
                .unwrap_or_else(|log| panic!("{} for {arch} does not compile:\n{log}", source.file))
                .to_src();
            assert!(
                ptx.contains(&format!(".target sm_{}", &arch["compute_".len()..])),
                "{}: PTX for another target",
                source.file
            );
            assert!(
                ptx_isa(&ptx) <= DRIVER_PTX_ISA,
                "{}: PTX ISA {:?} is newer than a CUDA 13.0 driver loads",
                source.file,
                ptx_isa(&ptx)
            );
            for kernel in source.kernels {
                assert!(
                    ptx.contains(&format!(".entry {kernel}(")),
                    "{}: kernel {kernel} missing from the PTX",
                    source.file
                );
            }
            compiled += 1;
        }
    }
    assert_eq!(compiled, 2 * SOURCES.len());
}

#[test]
fn a_broken_kernel_is_reported_with_the_compiler_log() {
    if !nvrtc_present() {
        return;
    }
    let broken = marquee_kernels::cuda::KernelSource {
        file: "broken.cu",
        code: "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }",
        kernels: &["broken"],
    };
    let Err(log) = compile(&broken, "compute_90") else {
        panic!("a kernel with an undefined name compiled");
    };
    assert!(
        log.contains("broken.cu") && log.contains("undefined_name"),
        "{log}"
    );
}
