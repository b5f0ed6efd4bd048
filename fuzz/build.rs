//! Links the fuzz binaries and tests although both plugin crates they use (bert-text and
//! qwen2-vl) export the same C ABI entry, `marquee_plugin_entry` (what the server looks
//! up in a plugin's shared library): nothing here calls it, so either copy will do.

fn main() {
    println!("cargo:rustc-link-arg=-Wl,--allow-multiple-definition");
}
