//! Target `collection_config`: arbitrary bytes decoded as a `CreateCollectionRequest`
//! and validated by [`Config::from_request`]; an accepted configuration must survive
//! the round trip through the request that recreates it (`config.pb`), encoded and
//! decoded again, unchanged.

use marquee_proto::v1::CreateCollectionRequest;
use marquee_server::retrieval::collection::Config;
use prost::Message;

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(request) = CreateCollectionRequest::decode(data) else {
        return;
    };
    let Ok(config) = Config::from_request(&request) else {
        return;
    };
    let recreated = config.to_request();
    let stored = CreateCollectionRequest::decode(recreated.encode_to_vec().as_slice())
        .expect("an encoded request decodes");
    assert_eq!(stored, recreated, "the stored request decodes as written");
    let reloaded = Config::from_request(&stored).expect("a stored configuration is accepted");
    assert_eq!(
        reloaded, config,
        "the configuration survives its round trip"
    );
}
