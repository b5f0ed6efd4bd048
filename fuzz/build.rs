//! Links the fuzz binaries and tests although both plugin crates they use (bert-text and
//! qwen2-vl) export the same C ABI entry, `marquee_plugin_entry` (what the server looks
//! up in a plugin's shared library): nothing here calls it, so either copy will do.
//!
//! Why a linker flag and not a cargo feature gating the entry: a default feature (say
//! `entry`) that this crate turns off with `default-features = false` is turned back on
//! by feature unification whenever the plugin crates are built in the same invocation as
//! this one, as `cargo test --release --workspace` (scripts/test.sh, CI) does, since the
//! plugins are workspace members built with their default features for their cdylibs.
//! The replay test would then link two definitions again, and whether the linker sees
//! both depends on how rustc splits the plugins into codegen units (a one-unit build of
//! two such crates fails with "duplicate symbol"). The opposite polarity (a `no-entry`
//! feature this crate turns on) would strip the symbol from the plugins' own cdylibs in a
//! workspace build. Only a separate cdylib crate per plugin would avoid both.

fn main() {
    println!("cargo:rustc-link-arg=-Wl,--allow-multiple-definition");
}
