//! How the process's heap treats large buffers (glibc only; elsewhere nothing).
//!
//! glibc's malloc hands every buffer above its (adaptive, at most 32 MiB) threshold
//! straight to `mmap` and back to the kernel when freed, and trims the heap after every
//! large free. The encoders' activations and the trainer's tensors are such buffers,
//! allocated and freed many times a second, so each one costs fresh zeroed pages (a
//! fifth of a training step's time went to page faults and `memset`).
//! [`reuse_large_buffers`] keeps buffers up to 32 MiB on the heap and grows it in steps
//! of 256 MiB, so freed memory is reused (pages never touched are not resident);
//! [`release_free_memory`] hands what is free back to the kernel after a burst such as
//! a fine-tuning job.

/// Keeps buffers up to 32 MiB on the heap and grows it 256 MiB at a time. Call it
/// first thing in `main`, before any other thread starts.
pub fn reuse_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Returns the free memory of every malloc arena to the kernel.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
