//! The `--filter` mini-language: `field=value`, `field contains value`, and the ranges
//! `field>=N`, `field>N`, `field<=N`, `field<N`. Every filter given must hold.
//!
//! `=` infers the value's type: an integer, else a float, else `true`/`false`, else a
//! string; quoting (`title="1917"`) forces a string. Whitespace around the field, the
//! operator and the value is ignored.

use anyhow::{bail, Result};
use marquee_client::proto::{condition::Test, value::Kind, Condition, Filter, Range, Value};

/// Parses every `--filter` flag into one [`Filter`]; `None` when there are none. Range flags
/// on the same field merge into one condition while their bounds do not collide.
pub fn parse_all(filters: &[String]) -> Result<Option<Filter>> {
    let mut must: Vec<Condition> = Vec::new();
    for text in filters {
        let condition = parse(text)?;
        if let Some(Test::Range(range)) = &condition.test {
            let same_field = must.iter_mut().find_map(|c| match &mut c.test {
                Some(Test::Range(existing)) if c.field == condition.field => Some(existing),
                _ => None,
            });
            if let Some(existing) = same_field {
                if merge(existing, range) {
                    continue;
                }
            }
        }
        must.push(condition);
    }
    Ok((!must.is_empty()).then_some(Filter { must }))
}

/// Merges `extra` into `range` when no bound is set in both; returns whether it merged.
fn merge(range: &mut Range, extra: &Range) -> bool {
    let collide = (range.gte.is_some() || range.gt.is_some())
        && (extra.gte.is_some() || extra.gt.is_some())
        || (range.lte.is_some() || range.lt.is_some())
            && (extra.lte.is_some() || extra.lt.is_some());
    if collide {
        return false;
    }
    range.gte = range.gte.or(extra.gte);
    range.gt = range.gt.or(extra.gt);
    range.lte = range.lte.or(extra.lte);
    range.lt = range.lt.or(extra.lt);
    true
}

/// Parses one filter expression.
pub fn parse(text: &str) -> Result<Condition> {
    let trimmed = text.trim();
    if let Some((field, value)) =
        split_contains(trimmed).filter(|(field, _)| !field.contains(['=', '<', '>']))
    {
        let field = field_name(field, text)?;
        let value = unquote(value.trim()).unwrap_or(value.trim());
        if value.is_empty() {
            bail!("filter {text:?}: missing value after 'contains'");
        }
        return Ok(Condition {
            field,
            test: Some(Test::Contains(value.to_string())),
        });
    }
    let Some(at) = trimmed.find(['=', '<', '>']) else {
        bail!(
            "filter {text:?}: expected field=value, field contains value, \
             or field>=N / field>N / field<=N / field<N"
        );
    };
    let field_part = &trimmed[..at];
    if field_part.ends_with('!') {
        bail!("filter {text:?}: '!=' is not supported");
    }
    let rest = &trimmed[at..];
    let (op, value) = ["<=", ">=", "<", ">", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
        .expect("rest starts with an operator");
    let field = field_name(field_part, text)?;
    if value.is_empty() {
        bail!("filter {text:?}: missing value after '{op}'");
    }
    if op == "=" {
        if value.starts_with(['=', '<', '>']) {
            bail!("filter {text:?}: unknown operator '{op}{}'", &value[..1]);
        }
        return Ok(Condition {
            field,
            test: Some(Test::Equals(typed_value(value))),
        });
    }
    let Some(bound) = value.parse::<f64>().ok().filter(|n| n.is_finite()) else {
        bail!("filter {text:?}: '{op}' needs a number, got {value:?}");
    };
    let mut range = Range::default();
    match op {
        ">=" => range.gte = Some(bound),
        ">" => range.gt = Some(bound),
        "<=" => range.lte = Some(bound),
        _ => range.lt = Some(bound),
    }
    Ok(Condition {
        field,
        test: Some(Test::Range(range)),
    })
}

/// Splits `field contains value` at the first ` contains ` (any whitespace around it).
fn split_contains(text: &str) -> Option<(&str, &str)> {
    let mut search_from = 0;
    while let Some(pos) = text[search_from..].find("contains") {
        let start = search_from + pos;
        let end = start + "contains".len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if before.is_some_and(char::is_whitespace) && after.is_some_and(char::is_whitespace) {
            return Some((&text[..start], &text[end..]));
        }
        search_from = end;
    }
    None
}

/// A field name: non-empty, without whitespace, quotes or operator characters.
fn field_name(raw: &str, text: &str) -> Result<String> {
    let field = raw.trim();
    if field.is_empty() {
        bail!("filter {text:?}: missing field name");
    }
    if field.contains(|c: char| c.is_whitespace() || "\"'=<>!".contains(c)) {
        bail!("filter {text:?}: invalid field name {field:?}");
    }
    Ok(field.to_string())
}

/// The inside of a `"..."` or `'...'` quoted string.
fn unquote(value: &str) -> Option<&str> {
    for q in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(q)
            .and_then(|v| v.strip_suffix(q))
            .filter(|_| value.len() >= 2)
        {
            return Some(inner);
        }
    }
    None
}

/// An `=` value: quoted → string, else int, float, bool, string.
fn typed_value(value: &str) -> Value {
    let kind = if let Some(inner) = unquote(value) {
        Kind::StringValue(inner.to_string())
    } else if let Ok(i) = value.parse::<i64>() {
        Kind::IntValue(i)
    } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Kind::DoubleValue(f)
    } else if value == "true" || value == "false" {
        Kind::BoolValue(value == "true")
    } else {
        Kind::StringValue(value.to_string())
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_of(text: &str) -> (String, Test) {
        let c = parse(text).unwrap();
        (c.field, c.test.unwrap())
    }

    fn equals(kind: Kind) -> Test {
        Test::Equals(Value { kind: Some(kind) })
    }

    #[test]
    fn equals_infers_types() {
        assert_eq!(
            test_of("year=1999"),
            ("year".into(), equals(Kind::IntValue(1999)))
        );
        assert_eq!(
            test_of("score = -2.5"),
            ("score".into(), equals(Kind::DoubleValue(-2.5)))
        );
        assert_eq!(
            test_of("adult=false"),
            ("adult".into(), equals(Kind::BoolValue(false)))
        );
        assert_eq!(test_of("adult=true").1, equals(Kind::BoolValue(true)));
        assert_eq!(
            test_of("director=Michael Mann").1,
            equals(Kind::StringValue("Michael Mann".into()))
        );
        assert_eq!(
            test_of("title=\"1917\"").1,
            equals(Kind::StringValue("1917".into()))
        );
        assert_eq!(
            test_of("flag='true'").1,
            equals(Kind::StringValue("true".into()))
        );
        assert_eq!(
            test_of("title=\"\"").1,
            equals(Kind::StringValue(String::new()))
        );
        assert_eq!(
            test_of("expr=a=b").1,
            equals(Kind::StringValue("a=b".into()))
        );
        assert_eq!(test_of("x=nan").1, equals(Kind::StringValue("nan".into())));
        assert_eq!(
            test_of("title=Who contains what").1,
            equals(Kind::StringValue("Who contains what".into()))
        );
    }

    #[test]
    fn contains() {
        assert_eq!(
            test_of("genres contains Drama"),
            ("genres".into(), Test::Contains("Drama".into()))
        );
        assert_eq!(
            test_of("  genres   contains  \"Science Fiction\" ").1,
            Test::Contains("Science Fiction".into())
        );
        assert_eq!(
            test_of("keywords contains heist film").1,
            Test::Contains("heist film".into())
        );
    }

    #[test]
    fn ranges() {
        let range = |text| match test_of(text) {
            (f, Test::Range(r)) => (f, r),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            range("year>=1990"),
            (
                "year".into(),
                Range {
                    gte: Some(1990.0),
                    ..Default::default()
                }
            )
        );
        assert_eq!(
            range("year > 1990").1,
            Range {
                gt: Some(1990.0),
                ..Default::default()
            }
        );
        assert_eq!(
            range("rating<=4.5").1,
            Range {
                lte: Some(4.5),
                ..Default::default()
            }
        );
        assert_eq!(
            range("rating<4").1,
            Range {
                lt: Some(4.0),
                ..Default::default()
            }
        );
    }

    #[test]
    fn malformed_filters_fail() {
        for bad in [
            "",
            "year",
            "=1990",
            ">=5",
            "year>=",
            "year>=abc",
            "year<nineteen",
            "year!=1990",
            "year==1990",
            "year=>1990",
            "year=",
            "the year=1990",
            "genres contains ",
            " contains Drama",
            "year>=inf",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn all_filters_combine_and_ranges_merge() {
        assert!(parse_all(&[]).unwrap().is_none());
        let filters = [
            "year>=1990",
            "genres contains Drama",
            "year<2000",
            "year<1995",
        ]
        .map(String::from);
        let filter = parse_all(&filters).unwrap().unwrap();
        assert_eq!(filter.must.len(), 3);
        assert_eq!(
            filter.must[0].test,
            Some(Test::Range(Range {
                gte: Some(1990.0),
                lt: Some(2000.0),
                ..Default::default()
            }))
        );
        assert_eq!(filter.must[1].field, "genres");
        assert_eq!(
            filter.must[2].test,
            Some(Test::Range(Range {
                lt: Some(1995.0),
                ..Default::default()
            }))
        );
        assert!(parse_all(&["year>=x".to_string()]).is_err());
    }
}
