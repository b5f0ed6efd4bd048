//! Target `recall_template`: the recall instruction's `{ocr_text}` / `{transcript}`
//! template ([`render_recall_instruction`]) against a reference made of splits (so text
//! substituted in is never substituted again), and the one user message
//! [`build_prompt`] makes of a recall input: its scene images, then that text.

use marquee_server::engine::generation::prompt::{build_prompt, render_recall_instruction};
use marquee_server::engine::generation::request::{GenerationInput, RecallInput};
use serde_json::json;

/// The instruction rendered by splitting it at `{ocr_text}`, replacing `{transcript}`
/// in each piece, and joining the pieces with the OCR text. The placeholders cannot
/// overlap (neither holds a second `{`), so this is the specified rendering.
fn reference_rendering(instruction: &str, recall: &RecallInput) -> String {
    instruction
        .split("{ocr_text}")
        .map(|piece| piece.replace("{transcript}", &recall.transcript))
        .collect::<Vec<_>>()
        .join(&recall.ocr_text)
}

/// Checks one input: the instruction, OCR text and transcript (UTF-8, invalid sequences
/// replaced), separated by `0xFF` bytes (never part of UTF-8); each further
/// `0xFF`-separated part is a scene image's bytes.
pub fn check(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xFF);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (instruction, ocr_text, transcript) = (text(), text(), text());
    let recall = RecallInput {
        scene_images: parts.map(<[u8]>::to_vec).collect(),
        ocr_text,
        transcript,
    };
    let rendered = render_recall_instruction(&instruction, &recall);
    assert_eq!(rendered, reference_rendering(&instruction, &recall));
    let images = recall.scene_images.clone();
    let prompt = match build_prompt(GenerationInput::Recall(recall), &instruction) {
        Ok(prompt) => prompt,
        Err(e) => {
            assert!(
                images.iter().any(Vec::is_empty),
                "a recall prompt with no empty image refused: {e}"
            );
            return;
        }
    };
    let mut content: Vec<_> = images.iter().map(|_| json!({"type": "image"})).collect();
    content.push(json!({"type": "text", "text": rendered}));
    assert_eq!(
        prompt.messages,
        json!([{"role": "user", "content": content}])
    );
    assert_eq!(prompt.images, images);
}
