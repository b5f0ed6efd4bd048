//! Target `chat_template`: the Qwen2.5-VL chat template (minijinja with Python-compatible
//! methods) rendered on arbitrary JSON as its messages: any JSON value, well-formed
//! messages or not, must render or fail with an error, never panic or hang.

use crate::qwen_fixture;
use marquee_qwen2_vl::chat_template::ChatTemplate;
use std::sync::OnceLock;

fn template() -> &'static ChatTemplate {
    static TEMPLATE: OnceLock<ChatTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        ChatTemplate::load(&qwen_fixture::dir()).expect("the qwen2-vl test fixture's template")
    })
}

/// Checks one input: JSON messages; an odd length opens the assistant's turn.
pub fn check(data: &[u8]) {
    let Ok(messages) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let add_generation_prompt = data.len() % 2 == 1;
    if let Ok(text) = template().render(&messages, add_generation_prompt) {
        if add_generation_prompt {
            assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
        }
    }
}
