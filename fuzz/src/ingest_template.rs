//! Target `ingest_template`: the `marquee ingest --template` parser and renderer
//! ([`Template`]), against a reference reading of its grammar.
//!
//! The input is the template source, then optionally a `0xff` byte and a JSON record
//! (the bytes before it as UTF-8, lossily). The parser must accept exactly what the
//! reference accepts; an accepted template must render, with no fields, its literal text,
//! with every field present, each placeholder as its first alternative, and with the
//! input's record, without panicking. Any text, its braces doubled, must parse and
//! render as itself whatever the record.

use marquee_client::template::Template;
use serde_json::{Map, Value};

/// A template as the reference reads it: literal text and placeholders, in order.
#[derive(Debug)]
enum Piece {
    Text(String),
    /// The alternatives, trimmed.
    Field(Vec<String>),
}

/// The reference grammar: `{{` and `}}` are braces, `{a|b}` a placeholder (no brace
/// inside, no empty alternative), any other brace an error.
fn reference(source: &str) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = source;
    while !rest.is_empty() {
        let Some(at) = rest.find(['{', '}']) else {
            pieces.push(Piece::Text(rest.to_string()));
            break;
        };
        pieces.push(Piece::Text(rest[..at].to_string()));
        let brace = &rest[at..at + 1];
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix(brace) {
            pieces.push(Piece::Text(brace.to_string()));
            rest = after;
            continue;
        }
        if brace == "}" {
            return None;
        }
        let end = rest.find('}')?;
        let inner = &rest[..end];
        if inner.contains('{') {
            return None;
        }
        let fields: Vec<String> = inner.split('|').map(|f| f.trim().to_string()).collect();
        if fields.iter().any(String::is_empty) {
            return None;
        }
        pieces.push(Piece::Field(fields));
        rest = &rest[end + 1..];
    }
    Some(pieces)
}

/// `text` with its braces doubled: a template that renders as `text`.
fn escaped(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let (source, record) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let source = String::from_utf8_lossy(source);
    let record: Map<String, Value> = record
        .and_then(|r| serde_json::from_slice::<Value>(r).ok())
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default();

    let parsed = Template::parse(&source);
    let expected = reference(&source);
    assert_eq!(
        parsed.is_ok(),
        expected.is_some(),
        "parser and reference disagree on {source:?}: {parsed:?}"
    );
    if let (Ok(template), Some(pieces)) = (&parsed, &expected) {
        let literal: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Field(_) => "",
            })
            .collect();
        assert_eq!(
            template.render(&Map::new()),
            literal,
            "{source:?} with no fields"
        );
        // Every field present, as a distinct non-blank string: the first alternative wins.
        let mut all = Map::new();
        for piece in pieces {
            if let Piece::Field(fields) = piece {
                for f in fields {
                    all.insert(f.clone(), Value::String(format!("<{f}>")));
                }
            }
        }
        let firsts: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Field(fields) => format!("<{}>", fields[0]),
            })
            .collect();
        assert_eq!(template.render(&all), firsts, "{source:?} with every field");
        let _ = template.render(&record);
    }
    // Escaped text is literal whatever the record holds.
    let literal = Template::parse(&escaped(&source)).expect("escaped text parses");
    assert_eq!(
        literal.render(&record),
        source,
        "escaped text renders as itself"
    );
}
