//! A request's prompt as the plugin's chat template takes it: messages as a JSON array
//! of `{"role", "content": [{"type": "text", "text"} | {"type": "image"}]}` with the
//! images' bytes beside them, in order. A recall input becomes one user message: its
//! scene images, then the model's recall instruction with the OCR text and transcript.

use super::request::{ChatMessage, ContentPart, GenerationInput, RecallInput};
use crate::engine::error::EngineError;
use serde_json::{json, Value};

/// Messages ready for the chat template, and the images they refer to, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    /// The JSON array of messages.
    pub messages: Value,
    /// The images' encoded bytes, in the order their parts appear.
    pub images: Vec<Vec<u8>>,
}

/// The recall instruction with `{ocr_text}` and `{transcript}` replaced (each once,
/// so text inside them is never substituted again).
pub fn render_recall_instruction(instruction: &str, recall: &RecallInput) -> String {
    let mut out = String::with_capacity(instruction.len() + recall.ocr_text.len());
    let mut rest = instruction;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{ocr_text}") {
            out.push_str(&recall.ocr_text);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{transcript}") {
            out.push_str(&recall.transcript);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Builds the prompt of `input`; recall inputs use `recall_instruction`.
pub fn build_prompt(
    input: GenerationInput,
    recall_instruction: &str,
) -> Result<Prompt, EngineError> {
    let messages = match input {
        GenerationInput::Chat(messages) => messages,
        GenerationInput::Recall(recall) => {
            let text = render_recall_instruction(recall_instruction, &recall);
            let mut content: Vec<ContentPart> = recall
                .scene_images
                .into_iter()
                .map(ContentPart::Image)
                .collect();
            content.push(ContentPart::Text(text));
            vec![ChatMessage {
                role: "user".into(),
                content,
            }]
        }
    };
    if messages.is_empty() {
        return Err(EngineError::Invalid("the prompt has no messages".into()));
    }
    let mut images = Vec::new();
    let mut rendered = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        if !matches!(message.role.as_str(), "system" | "user" | "assistant") {
            return Err(EngineError::Invalid(format!(
                "message {i} has role {:?}; roles are system, user and assistant",
                message.role
            )));
        }
        let mut parts = Vec::with_capacity(message.content.len());
        for part in message.content {
            match part {
                ContentPart::Text(text) => parts.push(json!({"type": "text", "text": text})),
                ContentPart::Image(bytes) => {
                    if bytes.is_empty() {
                        return Err(EngineError::Invalid(format!(
                            "message {i} has an empty image"
                        )));
                    }
                    images.push(bytes);
                    parts.push(json!({"type": "image"}));
                }
            }
        }
        rendered.push(json!({"role": message.role, "content": parts}));
    }
    Ok(Prompt {
        messages: Value::Array(rendered),
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_becomes_one_user_message_images_first() {
        let recall = RecallInput {
            scene_images: vec![vec![1], vec![2]],
            ocr_text: "EXIT {transcript}".into(),
            transcript: "run".into(),
        };
        let prompt = build_prompt(
            GenerationInput::Recall(recall),
            "[{ocr_text}|{transcript}|{x}]",
        )
        .unwrap();
        assert_eq!(prompt.images, vec![vec![1], vec![2]]);
        assert_eq!(
            prompt.messages,
            json!([{"role": "user", "content": [
                {"type": "image"}, {"type": "image"},
                {"type": "text", "text": "[EXIT {transcript}|run|{x}]"}
            ]}])
        );
    }

    #[test]
    fn bad_roles_and_empty_images_are_refused() {
        let message = |role: &str, part| ChatMessage {
            role: role.into(),
            content: vec![part],
        };
        let err = build_prompt(
            GenerationInput::Chat(vec![message("tool", ContentPart::Text("x".into()))]),
            "",
        )
        .unwrap_err();
        assert!(err.to_string().contains("role \"tool\""), "{err}");
        let err = build_prompt(
            GenerationInput::Chat(vec![message("user", ContentPart::Image(Vec::new()))]),
            "",
        )
        .unwrap_err();
        assert!(err.to_string().contains("empty image"), "{err}");
        assert!(build_prompt(GenerationInput::Chat(Vec::new()), "").is_err());
    }
}
