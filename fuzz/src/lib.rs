//! Marquee's fuzz targets (cargo-fuzz, libFuzzer). Each module holds one target's body,
//! a `check` function taking the raw input; `fuzz_targets/<name>.rs` hands libFuzzer's
//! inputs to it, and `tests/replay.rs` replays the committed corpora
//! (`corpus/<name>/`) and crash inputs (`regressions/<name>/`) through it as ordinary
//! tests. `scripts/fuzz.sh TARGET SECONDS` runs a target.

pub mod bert_tokenizer;
pub mod chat_template;
pub mod collection_config;
pub mod detokenizer;
pub mod image_decode;
pub mod ingest_template;
pub mod payload_filter;
mod qwen_fixture;
pub mod recall_template;
pub mod rpc_requests;
pub mod wal_frames;

/// A target's body: checks one input, panicking on a failure.
pub type Check = fn(&[u8]);

/// Every target: its name (its `fuzz_targets/` file stem and corpus directory) and body.
pub const TARGETS: &[(&str, Check)] = &[
    ("bert_tokenizer", bert_tokenizer::check),
    ("chat_template", chat_template::check),
    ("collection_config", collection_config::check),
    ("detokenizer", detokenizer::check),
    ("image_decode", image_decode::check),
    ("ingest_template", ingest_template::check),
    ("payload_filter", payload_filter::check),
    ("recall_template", recall_template::check),
    ("rpc_requests", rpc_requests::check),
    ("wal_frames", wal_frames::check),
];
