//! Typed payload fields, the per-collection field schema, and compiled filters.

use super::error::StorageError;
use marquee_proto::v1::{condition::Test, value::Kind, Filter, Range, Value};
use std::collections::{BTreeMap, HashMap};

/// An item's payload.
pub type Payload = HashMap<String, Value>;

/// The type of a payload field, fixed by the first item that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// UTF-8 string.
    String,
    /// Signed integer.
    Int,
    /// Floating-point number.
    Double,
    /// Boolean.
    Bool,
    /// List of strings.
    List,
}

impl FieldType {
    fn of(value: &Value) -> Option<FieldType> {
        Some(match value.kind.as_ref()? {
            Kind::StringValue(_) => FieldType::String,
            Kind::IntValue(_) => FieldType::Int,
            Kind::DoubleValue(_) => FieldType::Double,
            Kind::BoolValue(_) => FieldType::Bool,
            Kind::ListValue(_) => FieldType::List,
        })
    }

    fn is_numeric(self) -> bool {
        matches!(self, FieldType::Int | FieldType::Double)
    }
}

/// Field name → type, for every field any item of the collection has had.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    fields: BTreeMap<String, FieldType>,
}

impl Schema {
    /// Checks a payload against the schema without changing it.
    pub fn check(&self, id: &str, payload: &Payload) -> Result<(), StorageError> {
        for (name, value) in payload {
            let ty = FieldType::of(value).ok_or_else(|| {
                StorageError::InvalidArgument(format!(
                    "item {id}: payload field {name} has no value"
                ))
            })?;
            if let Some(Kind::DoubleValue(d)) = &value.kind {
                if !d.is_finite() {
                    return Err(StorageError::InvalidArgument(format!(
                        "item {id}: payload field {name} is not a finite number"
                    )));
                }
            }
            if let Some(&known) = self.fields.get(name) {
                if known != ty && !(known.is_numeric() && ty.is_numeric()) {
                    return Err(StorageError::InvalidArgument(format!(
                        "item {id}: payload field {name} is {ty:?} but the collection stores it as {known:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Records the fields of a stored payload.
    pub fn learn(&mut self, payload: &Payload) {
        for (name, value) in payload {
            if let Some(ty) = FieldType::of(value) {
                self.fields.entry(name.clone()).or_insert(ty);
            }
        }
    }

    /// Compiles a filter, refusing unknown fields and tests that do not fit their type.
    pub fn compile(&self, filter: Option<&Filter>) -> Result<Option<CompiledFilter>, StorageError> {
        let Some(filter) = filter.filter(|f| !f.must.is_empty()) else {
            return Ok(None);
        };
        let mut conditions = Vec::with_capacity(filter.must.len());
        for c in &filter.must {
            let ty = *self.fields.get(&c.field).ok_or_else(|| {
                StorageError::InvalidArgument(format!(
                    "filter on unknown field {:?} (known: {})",
                    c.field,
                    self.fields.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let wrong = |test: &str| {
                StorageError::InvalidArgument(format!(
                    "filter: field {} is {ty:?}, which has no {test} test",
                    c.field
                ))
            };
            let condition = match c.test.as_ref() {
                None => {
                    return Err(StorageError::InvalidArgument(format!(
                        "filter on {} has no test",
                        c.field
                    )))
                }
                Some(Test::Equals(v)) => {
                    let vt = FieldType::of(v).ok_or_else(|| {
                        StorageError::InvalidArgument(format!("filter on {}: empty value", c.field))
                    })?;
                    if vt == FieldType::List || !(vt == ty || (vt.is_numeric() && ty.is_numeric()))
                    {
                        return Err(StorageError::InvalidArgument(format!(
                            "filter: field {} is {ty:?}, compared with a {vt:?}",
                            c.field
                        )));
                    }
                    Cond::Equals(c.field.clone(), v.kind.clone().expect("checked"))
                }
                Some(Test::Contains(s)) => {
                    if ty != FieldType::List {
                        return Err(wrong("contains"));
                    }
                    Cond::Contains(c.field.clone(), s.clone())
                }
                Some(Test::Range(r)) => {
                    if !ty.is_numeric() {
                        return Err(wrong("range"));
                    }
                    Cond::Range(c.field.clone(), *r)
                }
            };
            conditions.push(condition);
        }
        Ok(Some(CompiledFilter { conditions }))
    }
}

enum Cond {
    Equals(String, Kind),
    Contains(String, String),
    Range(String, Range),
}

/// A filter checked against the schema, ready to test payloads.
pub struct CompiledFilter {
    conditions: Vec<Cond>,
}

fn number(kind: &Kind) -> Option<f64> {
    match kind {
        Kind::IntValue(i) => Some(*i as f64),
        Kind::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

impl CompiledFilter {
    /// Whether a payload satisfies every condition.
    pub fn matches(&self, payload: &Payload) -> bool {
        self.conditions.iter().all(|c| {
            let field = |name: &str| payload.get(name).and_then(|v| v.kind.as_ref());
            match c {
                Cond::Equals(name, want) => field(name).is_some_and(|got| match (number(got), number(want)) {
                    (Some(a), Some(b)) => a == b,
                    _ => got == want,
                }),
                Cond::Contains(name, s) => {
                    matches!(field(name), Some(Kind::ListValue(l)) if l.values.iter().any(|v| v == s))
                }
                Cond::Range(name, r) => field(name).and_then(number).is_some_and(|x| {
                    r.gte.is_none_or(|b| x >= b)
                        && r.gt.is_none_or(|b| x > b)
                        && r.lte.is_none_or(|b| x <= b)
                        && r.lt.is_none_or(|b| x < b)
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_proto::v1::{Condition, StringList};

    fn v(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn movie(year: i64, genres: &[&str]) -> Payload {
        HashMap::from([
            ("year".into(), v(Kind::IntValue(year))),
            ("title".into(), v(Kind::StringValue("X".into()))),
            (
                "genres".into(),
                v(Kind::ListValue(StringList {
                    values: genres.iter().map(|g| g.to_string()).collect(),
                })),
            ),
        ])
    }

    fn filter(conditions: Vec<(&str, Test)>) -> Filter {
        Filter {
            must: conditions
                .into_iter()
                .map(|(f, t)| Condition {
                    field: f.into(),
                    test: Some(t),
                })
                .collect(),
        }
    }

    #[test]
    fn filters_match_typed_fields() {
        let mut schema = Schema::default();
        schema.learn(&movie(1994, &["Drama"]));
        let f = schema
            .compile(Some(&filter(vec![
                (
                    "year",
                    Test::Range(Range {
                        gte: Some(1990.0),
                        lt: Some(2000.0),
                        ..Default::default()
                    }),
                ),
                ("genres", Test::Contains("Drama".into())),
            ])))
            .unwrap()
            .unwrap();
        assert!(f.matches(&movie(1994, &["Drama", "Crime"])));
        assert!(!f.matches(&movie(2000, &["Drama"])));
        assert!(!f.matches(&movie(1994, &["Comedy"])));
        assert!(!f.matches(&HashMap::new()));
        let eq = schema
            .compile(Some(&filter(vec![(
                "year",
                Test::Equals(v(Kind::DoubleValue(1994.0))),
            )])))
            .unwrap()
            .unwrap();
        assert!(eq.matches(&movie(1994, &[])));
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused() {
        let mut schema = Schema::default();
        schema.learn(&movie(1994, &["Drama"]));
        let err = |f: Filter| schema.compile(Some(&f)).err().unwrap().to_string();
        assert!(err(filter(vec![("nope", Test::Contains("x".into()))])).contains("unknown field"));
        assert!(
            err(filter(vec![("year", Test::Contains("x".into()))])).contains("no contains test")
        );
        assert!(
            err(filter(vec![("title", Test::Range(Range::default()))])).contains("no range test")
        );
        assert!(err(filter(vec![(
            "year",
            Test::Equals(v(Kind::StringValue("1994".into())))
        )]))
        .contains("compared with"));
        let bad = HashMap::from([("year".to_string(), v(Kind::StringValue("x".into())))]);
        assert!(schema.check("a", &bad).is_err());
        let nan = HashMap::from([("score".to_string(), v(Kind::DoubleValue(f64::NAN)))]);
        assert!(schema.check("a", &nan).is_err());
    }
}
