//! Target `bert_tokenizer`: differential test of the BERT tokenizer's fast path
//! ([`TextTokenizer::encode`]) against the full `tokenizers` pipeline
//! ([`TextTokenizer::encode_full`]) on all-MiniLM-L6-v2's `tokenizer.json`: both must
//! give the same ids and untruncated count, or both fail. The fast path's documented
//! refusal (a character outside its table, or an added token such as `[MASK]` in the
//! text) sends the text to the full pipeline, which this comparison covers too.
//!
//! The tokenizer is the one `scripts/fetch-model.sh` fetches (as for the plugin's own
//! tests), or the file `MARQUEE_FUZZ_BERT_TOKENIZER` names.

use marquee_bert_text::tokenize::TextTokenizer;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where all-MiniLM-L6-v2's `tokenizer.json` is read from.
pub fn tokenizer_path() -> PathBuf {
    std::env::var_os("MARQUEE_FUZZ_BERT_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../data/models/all-MiniLM-L6-v2/tokenizer.json")
        })
}

fn tokenizer() -> &'static TextTokenizer {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = tokenizer_path();
        TextTokenizer::load(&path).unwrap_or_else(|e| {
            panic!(
                "{e:#}: run scripts/fetch-model.sh, or set MARQUEE_FUZZ_BERT_TOKENIZER to \
                 all-MiniLM-L6-v2's tokenizer.json"
            )
        })
    })
}

/// Checks one input: a token limit selector byte (limits 1 to 256, and no limit), then
/// the text (UTF-8, invalid sequences replaced).
pub fn check(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let max_tokens = match selector {
        255 => usize::MAX,
        n => usize::from(n) + 1,
    };
    let text = String::from_utf8_lossy(text);
    let tokenizer = tokenizer();
    let fast = tokenizer
        .encode(&text, max_tokens)
        .map_err(|e| e.to_string());
    let full = tokenizer
        .encode_full(&text, max_tokens)
        .map_err(|e| e.to_string());
    assert_eq!(fast, full, "{text:?} at {max_tokens} tokens");
}
