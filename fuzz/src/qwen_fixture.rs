//! The tiny Qwen2.5-VL model directory of the plugin's tests (`tests/fixtures/tiny-flat`:
//! a byte-level BPE `tokenizer.json` with Qwen's special tokens, and the Qwen2.5-VL chat
//! template), shared by the `chat_template` and `detokenizer` targets.

use std::path::PathBuf;

/// The fixture directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/qwen2-vl/tests/fixtures/tiny-flat")
}
