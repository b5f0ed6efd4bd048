//! Text templates that turn a record into the text to embed: `"{title} ({year}). {overview|plot}"`.
//!
//! A template is literal text with `{field}` placeholders. `{a|b|c}` takes the first of the
//! fields that is present and non-empty; a placeholder with no such field renders as "".
//! `{{` and `}}` are literal braces. Strings render as they are, numbers and booleans
//! without quotes (`1999`), lists of values joined with ", ".

use anyhow::{bail, Result};
use serde_json::{Map, Value};

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// Alternatives, first non-empty wins.
    Field(Vec<String>),
}

impl Template {
    /// Parses `source`; fails on an unclosed or stray brace or an empty field name.
    pub fn parse(source: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    bail!("template {source:?}: unmatched '}}' (write '}}}}' for a literal brace)")
                }
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') => bail!("template {source:?}: '{{' inside a placeholder"),
                            Some(c) => inner.push(c),
                            None => bail!("template {source:?}: unclosed '{{'"),
                        }
                    }
                    let fields: Vec<String> =
                        inner.split('|').map(|f| f.trim().to_string()).collect();
                    if fields.iter().any(String::is_empty) {
                        bail!("template {source:?}: empty field name in {{{inner}}}");
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(fields));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// Renders the template with the fields of `record`.
    pub fn render(&self, record: &Map<String, Value>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(alternatives) => {
                    if let Some(text) = alternatives
                        .iter()
                        .filter_map(|f| record.get(f).and_then(text_of))
                        .find(|t| !t.trim().is_empty())
                    {
                        out.push_str(&text);
                    }
                }
            }
        }
        out
    }
}

/// A JSON value as template text; `None` for null.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(text_of)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::Object(_) => Some(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn placeholders_and_numbers() {
        let t = Template::parse("{title} ({year}). {overview|plot}").unwrap();
        let r = record(json!({"title": "The Matrix", "year": 1999, "overview": "Neo wakes up."}));
        assert_eq!(t.render(&r), "The Matrix (1999). Neo wakes up.");
        let r = record(json!({"title": "X", "year": 7.5, "rating": true}));
        let t2 = Template::parse("{title} {year} {rating}").unwrap();
        assert_eq!(t2.render(&r), "X 7.5 true");
    }

    #[test]
    fn alternatives_skip_missing_null_and_empty() {
        let t = Template::parse("{overview|plot|tagline}").unwrap();
        let r = record(json!({"overview": "", "plot": null, "tagline": "Go."}));
        assert_eq!(t.render(&r), "Go.");
        let r = record(json!({"overview": "  ", "plot": "P"}));
        assert_eq!(t.render(&r), "P");
        let r = record(json!({"overview": "O", "plot": "P"}));
        assert_eq!(t.render(&r), "O");
    }

    #[test]
    fn missing_fields_render_empty() {
        let t = Template::parse("{title} ({year}). {overview|plot}").unwrap();
        let r = record(json!({"title": "Untitled"}));
        assert_eq!(t.render(&r), "Untitled (). ");
    }

    #[test]
    fn lists_join_and_braces_escape() {
        let t = Template::parse("{{{genres}}} { title }").unwrap();
        let r = record(json!({"genres": ["Drama", "Crime"], "title": "T"}));
        assert_eq!(t.render(&r), "{Drama, Crime} T");
        let t = Template::parse("plain text").unwrap();
        assert_eq!(t.render(&Map::new()), "plain text");
    }

    #[test]
    fn malformed_templates_fail() {
        for bad in ["{title", "title}", "{}", "{a||b}", "{a{b}}", "{ | }"] {
            assert!(Template::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
