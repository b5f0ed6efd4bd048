//! One CUDA device as the backends use it: context, stream, cuBLAS handle and the compiled
//! kernels, created once per device and process.

use super::compile::{compile, SOURCES};
use crate::{KernelError, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DriverError};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

/// A ready device: kernels compiled for its architecture.
pub struct Gpu {
    /// The device's primary context.
    pub ctx: Arc<CudaContext>,
    /// The stream every op is queued on (ops of one backend run in order).
    pub stream: Arc<CudaStream>,
    /// cuBLAS, one caller at a time (its math mode is set per call).
    pub blas: Mutex<CudaBlas>,
    /// Streaming multiprocessors, for sizing grids.
    pub multiprocessors: u32,
    /// `NAME (sm_XY)`.
    pub description: String,
    kernels: HashMap<&'static str, CudaFunction>,
}

impl Gpu {
    /// A compiled kernel by name.
    pub fn kernel(&self, name: &str) -> Result<&CudaFunction> {
        self.kernels
            .get(name)
            .ok_or_else(|| KernelError::Device(format!("no kernel {name}")))
    }
}

/// Maps a driver error to the backend's error, out-of-memory kept apart.
pub fn driver_error(e: DriverError) -> KernelError {
    use cudarc::driver::sys::CUresult;
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        KernelError::OutOfMemory(format!("{e:?}"))
    } else {
        KernelError::Device(format!("{e:?}"))
    }
}

/// Checks that CUDA can be used on device `ordinal` without touching anything that panics
/// when a library is absent; returns the device's description or why not.
pub fn probe(ordinal: usize) -> std::result::Result<String, String> {
    // SAFETY: each call only tries to open a shared library.
    unsafe {
        if !cudarc::driver::sys::is_culib_present() {
            return Err("no CUDA driver (libcuda.so) on this host".into());
        }
        if !cudarc::nvrtc::sys::is_culib_present() {
            return Err("NVRTC (libnvrtc.so.13) not found, kernels cannot be compiled".into());
        }
        if !cudarc::cublas::sys::is_culib_present() {
            return Err("cuBLAS (libcublas.so.13) not found".into());
        }
    }
    catch_unwind(|| -> std::result::Result<String, String> {
        let count = CudaContext::device_count().map_err(|e| format!("CUDA driver error: {e:?}"))?;
        if ordinal >= count.max(0) as usize {
            return Err(format!("{count} CUDA device(s), no device {ordinal}"));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("{e:?}"))?;
        describe(&ctx).map_err(|e| format!("{e:?}"))
    })
    .unwrap_or_else(|_| Err("the CUDA libraries are present but failed to load".into()))
}

fn describe(ctx: &CudaContext) -> std::result::Result<String, DriverError> {
    let (major, minor) = ctx.compute_capability()?;
    Ok(format!("{} (sm_{major}{minor})", ctx.name()?))
}

/// The device `ordinal`, set up on first use (kernels compiled with NVRTC for its own
/// architecture) and shared afterwards.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    let devices = DEVICES.get_or_init(Default::default);
    let mut devices = devices.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(gpu) = devices.get(&ordinal) {
        return Ok(gpu.clone());
    }
    probe(ordinal).map_err(KernelError::Device)?;
    let gpu = catch_unwind(AssertUnwindSafe(|| set_up(ordinal)))
        .unwrap_or_else(|_| Err(KernelError::Device("CUDA set-up panicked".into())))?;
    let gpu = Arc::new(gpu);
    devices.insert(ordinal, gpu.clone());
    Ok(gpu)
}

fn set_up(ordinal: usize) -> Result<Gpu> {
    let ctx = CudaContext::new(ordinal).map_err(driver_error)?;
    let (major, minor) = ctx.compute_capability().map_err(driver_error)?;
    let arch = format!("compute_{major}{minor}");
    let stream = ctx.default_stream();
    let blas =
        CudaBlas::new(stream.clone()).map_err(|e| KernelError::Device(format!("cuBLAS: {e:?}")))?;
    let multiprocessors = ctx
        .attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )
        .map_err(driver_error)? as u32;
    let mut kernels = HashMap::new();
    for source in SOURCES {
        let ptx = compile(source, &arch).map_err(KernelError::Device)?;
        let module = ctx.load_module(ptx).map_err(driver_error)?;
        for &name in source.kernels {
            kernels.insert(name, module.load_function(name).map_err(driver_error)?);
        }
    }
    Ok(Gpu {
        description: describe(&ctx).map_err(driver_error)?,
        ctx,
        stream,
        blas: Mutex::new(blas),
        multiprocessors,
        kernels,
    })
}
