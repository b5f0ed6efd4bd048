//! Target `payload_filter`: payloads learnt into a collection's field [`Schema`] (those
//! it accepts), then a filter compiled against it and evaluated on every payload. Beyond
//! never panicking: a filter must match a payload exactly when each of its conditions,
//! compiled alone, does (conditions are a conjunction).

use marquee_proto::v1::{Filter, GetResponse};
use marquee_server::retrieval::payload::{Payload, Schema};
use prost::Message;

/// Checks one input: a little-endian `u16` length, that many bytes of a `Filter`, then a
/// `GetResponse` whose stored items' payloads are the collection's.
pub fn check(data: &[u8]) {
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
    let (filter, items) = rest.split_at(length);
    let (Ok(filter), Ok(items)) = (Filter::decode(filter), GetResponse::decode(items)) else {
        return;
    };
    let payloads: Vec<Payload> = items.items.into_iter().map(|item| item.payload).collect();
    let mut schema = Schema::default();
    for (i, payload) in payloads.iter().enumerate() {
        if schema.check(&i.to_string(), payload).is_ok() {
            schema.learn(payload);
        }
    }
    let Ok(Some(compiled)) = schema.compile(Some(&filter)) else {
        return;
    };
    let each: Vec<_> = filter
        .must
        .iter()
        .map(|condition| {
            let alone = Filter {
                must: vec![condition.clone()],
            };
            schema
                .compile(Some(&alone))
                .expect("a condition of a compiled filter compiles alone")
                .expect("one condition is a filter")
        })
        .collect();
    for payload in &payloads {
        assert_eq!(
            compiled.matches(payload),
            each.iter().all(|c| c.matches(payload)),
            "the filter {filter:?} on {payload:?}"
        );
    }
}
