//! Target `detokenizer`: the streaming [`IncrementalDecoder`] on the Qwen fixture's
//! byte-level tokenizer. Ids pushed one at a time must give pieces that concatenate to a
//! prefix of the decoding of all the ids, so no piece ends inside a UTF-8 character
//! (its bytes would have decoded as U+FFFD there). What is held back at the end is only
//! ever an incomplete character: the whole decoding when that does not end in U+FFFD.

use crate::qwen_fixture;
use marquee_qwen2_vl::tokenizer::{IncrementalDecoder, QwenTokenizer};
use std::sync::OnceLock;

/// Ids are taken modulo this: the fixture's 320 byte-level tokens and 9 added tokens,
/// and ids no token has (which decoding skips).
const ID_RANGE: u16 = 336;

/// Most ids taken from one input (each push decodes all ids since the last piece, and
/// the check decodes every prefix).
const MAX_IDS: usize = 256;

fn tokenizer() -> &'static QwenTokenizer {
    static TOKENIZER: OnceLock<QwenTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        QwenTokenizer::load(&qwen_fixture::dir()).expect("the qwen2-vl test fixture's tokenizer")
    })
}

/// Checks one input: a byte whose low bit asks to skip special tokens, then the ids,
/// two little-endian bytes each (the first [`MAX_IDS`]).
pub fn check(data: &[u8]) {
    let Some((&flags, ids)) = data.split_first() else {
        return;
    };
    let skip_special_tokens = flags & 1 == 1;
    let ids: Vec<u32> = ids
        .chunks_exact(2)
        .take(MAX_IDS)
        .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]]) % ID_RANGE))
        .collect();
    let tokenizer = tokenizer();
    let mut decoder = IncrementalDecoder::new(skip_special_tokens);
    let mut streamed = String::new();
    for (i, &id) in ids.iter().enumerate() {
        streamed.push_str(&decoder.push(tokenizer, id).expect("decoding known ids"));
        let so_far = tokenizer
            .decode(&ids[..=i], skip_special_tokens)
            .expect("decoding known ids");
        assert!(
            so_far.starts_with(&streamed),
            "after {} ids: streamed {streamed:?}, decoded {so_far:?}",
            i + 1
        );
    }
    let whole = tokenizer
        .decode(&ids, skip_special_tokens)
        .expect("decoding known ids");
    assert!(
        streamed == whole || whole.ends_with('\u{FFFD}'),
        "streamed {streamed:?}, decoded {whole:?}"
    );
}
