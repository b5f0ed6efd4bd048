//! Conversions between JSON values and payload [`Value`]s.

use anyhow::{bail, Context, Result};
use marquee_client::proto::{value::Kind, StringList, Value};
use std::collections::HashMap;

/// Converts a JSON value to a payload value: string → `string_value`, integer → `int_value`,
/// other number → `double_value`, bool → `bool_value`, array of strings → `list_value`.
/// `Ok(None)` for null (the field is omitted); an error for objects and mixed arrays.
pub fn from_json(value: &serde_json::Value) -> Result<Option<Value>> {
    use serde_json::Value as J;
    let kind = match value {
        J::Null => return Ok(None),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntValue(i),
            None => match n.as_f64() {
                Some(f) => Kind::DoubleValue(f),
                None => bail!("number {n} is out of range"),
            },
        },
        J::Array(items) => {
            let values = items
                .iter()
                .map(|item| match item {
                    J::String(s) => Ok(s.clone()),
                    other => bail!("lists must hold only strings, found {other}"),
                })
                .collect::<Result<Vec<_>>>()?;
            Kind::ListValue(StringList { values })
        }
        J::Object(_) => bail!("objects are not supported as payload values"),
    };
    Ok(Some(Value { kind: Some(kind) }))
}

/// Converts a CSV cell to a payload value: an integer → `int_value`, else a float →
/// `double_value`, else `string_value`.
pub fn from_csv_cell(cell: &str) -> Value {
    let kind = if let Ok(i) = cell.parse::<i64>() {
        Kind::IntValue(i)
    } else if let Some(f) = cell.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Kind::DoubleValue(f)
    } else {
        Kind::StringValue(cell.to_string())
    };
    Value { kind: Some(kind) }
}

/// Converts a payload value to JSON (null when unset).
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.kind {
        None => J::Null,
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::IntValue(i)) => J::from(*i),
        Some(Kind::DoubleValue(f)) => J::from(*f),
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::ListValue(list)) => J::from(list.values.clone()),
    }
}

/// Converts a payload map to a JSON object.
pub fn payload_to_json(payload: &HashMap<String, Value>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (key, value) in payload {
        map.insert(key.clone(), to_json(value));
    }
    serde_json::Value::Object(map)
}

/// A payload value as plain text (for human output): strings unquoted, lists joined with ", ".
pub fn to_text(value: &Value) -> String {
    match &value.kind {
        None => String::new(),
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::IntValue(i)) => i.to_string(),
        Some(Kind::DoubleValue(f)) => f.to_string(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::ListValue(list)) => list.values.join(", "),
    }
}

/// Reads a vector: a JSON array of numbers, or a string holding one (as in CSV).
pub fn vector(value: Option<&serde_json::Value>) -> Result<Vec<f32>> {
    let parsed;
    let value = match value {
        None | Some(serde_json::Value::Null) => bail!("missing"),
        Some(serde_json::Value::String(s)) => {
            parsed = serde_json::from_str::<serde_json::Value>(s)
                .context("not a JSON array of numbers")?;
            &parsed
        }
        Some(v) => v,
    };
    let Some(items) = value.as_array() else {
        bail!("not a JSON array of numbers");
    };
    if items.is_empty() {
        bail!("empty vector");
    }
    items
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .with_context(|| format!("{x} is not a number"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(v: serde_json::Value) -> Option<Kind> {
        from_json(&v).unwrap().and_then(|v| v.kind)
    }

    #[test]
    fn json_to_value() {
        assert_eq!(kind(json!("Heat")), Some(Kind::StringValue("Heat".into())));
        assert_eq!(kind(json!(1995)), Some(Kind::IntValue(1995)));
        assert_eq!(kind(json!(-3)), Some(Kind::IntValue(-3)));
        assert_eq!(kind(json!(7.5)), Some(Kind::DoubleValue(7.5)));
        assert_eq!(kind(json!(1.0)), Some(Kind::DoubleValue(1.0)));
        assert_eq!(
            kind(json!(u64::MAX)),
            Some(Kind::DoubleValue(u64::MAX as f64))
        );
        assert_eq!(kind(json!(true)), Some(Kind::BoolValue(true)));
        assert_eq!(
            kind(json!(["Crime", "Drama"])),
            Some(Kind::ListValue(StringList {
                values: vec!["Crime".into(), "Drama".into()]
            }))
        );
        assert_eq!(
            kind(json!([])),
            Some(Kind::ListValue(StringList { values: vec![] }))
        );
        assert!(from_json(&json!(null)).unwrap().is_none());
        assert!(from_json(&json!({"a": 1})).is_err());
        assert!(from_json(&json!(["a", 1])).is_err());
    }

    #[test]
    fn csv_cells_infer_numbers() {
        assert_eq!(from_csv_cell("1999").kind, Some(Kind::IntValue(1999)));
        assert_eq!(from_csv_cell("4.5").kind, Some(Kind::DoubleValue(4.5)));
        assert_eq!(
            from_csv_cell("Drama").kind,
            Some(Kind::StringValue("Drama".into()))
        );
        assert_eq!(
            from_csv_cell("NaN").kind,
            Some(Kind::StringValue("NaN".into()))
        );
        assert_eq!(
            from_csv_cell("tt0114709").kind,
            Some(Kind::StringValue("tt0114709".into()))
        );
    }

    #[test]
    fn vectors() {
        assert_eq!(vector(Some(&json!([1, -0.5]))).unwrap(), [1.0, -0.5]);
        assert_eq!(vector(Some(&json!("[0.25, 2]"))).unwrap(), [0.25, 2.0]);
        for bad in [
            json!(null),
            json!([]),
            json!([1, "x"]),
            json!("1, 2"),
            json!({}),
        ] {
            assert!(vector(Some(&bad)).is_err(), "{bad}");
        }
        assert!(vector(None).is_err());
    }

    #[test]
    fn value_to_json_round_trips() {
        for v in [
            json!("x"),
            json!(3),
            json!(2.5),
            json!(false),
            json!(["a", "b"]),
        ] {
            assert_eq!(to_json(&from_json(&v).unwrap().unwrap()), v);
        }
        assert_eq!(to_json(&Value { kind: None }), json!(null));
        let list = from_json(&json!(["a", "b"])).unwrap().unwrap();
        assert_eq!(to_text(&list), "a, b");
    }
}
