//! The model directory's chat template (`chat_template.jinja`, `chat_template.json` or
//! `tokenizer_config.json`'s `chat_template`, in that order, as transformers looks for
//! them), rendered with minijinja and Python-compatible string methods.

use crate::{read_to_string, Error, Result};
use serde_json::Value;
use std::path::Path;

/// A loaded chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

fn template_error(e: impl std::fmt::Display) -> Error {
    Error::Template(e.to_string())
}

/// The template text of a JSON file's `chat_template` (a string, or a list of named
/// templates of which `default` is taken).
fn from_json(path: &Path) -> Result<Option<String>> {
    let json: Value = serde_json::from_str(&read_to_string(path)?).map_err(template_error)?;
    Ok(match json.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    })
}

impl ChatTemplate {
    /// Finds and compiles the template of the model directory `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.exists() {
            Some(read_to_string(&jinja)?)
        } else {
            let mut found = None;
            for file in ["chat_template.json", "tokenizer_config.json"] {
                let path = dir.join(file);
                if found.is_none() && path.exists() {
                    found = from_json(&path)?;
                }
            }
            found
        };
        let source = source
            .ok_or_else(|| Error::Template(format!("no chat template in {}", dir.display())))?;
        Self::new(source)
    }

    /// Compiles template `source`.
    pub fn new(source: String) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(template_error)?;
        Ok(Self { env })
    }

    /// Renders `messages` (a JSON array of `{role, content}`, content a string or a list
    /// of `{type: text|image, ...}` parts), ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    pub fn render(&self, messages: &Value, add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template("chat").map_err(template_error)?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
            })
            .map_err(template_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jinja_file_wins_over_the_json_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "{{ messages[0].content | upper }}",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("chat_template.json"),
            r#"{"chat_template": "json"}"#,
        )
        .unwrap();
        let t = ChatTemplate::load(dir.path()).unwrap();
        let rendered = t
            .render(
                &serde_json::json!([{"role": "user", "content": "hi"}]),
                false,
            )
            .unwrap();
        assert_eq!(rendered, "HI");
        let empty = tempfile::tempdir().unwrap();
        assert!(ChatTemplate::load(empty.path()).is_err());
    }
}
