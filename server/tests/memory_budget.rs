//! The request memory budget against a real server: a flood of maximum-size requests at
//! ten times the admission limit is answered (handled, or RESOURCE_EXHAUSTED before the
//! bytes are read) and the server's peak RSS stays under the bound the README documents:
//! its idle RSS plus 3 × `limits.max_request_memory_bytes` plus 32 MiB. (Without the
//! budget the same flood peaks near the idle RSS plus 24 × 8 MiB.)

mod common;

use common::Server;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{item, CreateCollectionRequest, Item, UpsertRequest, Vector};
use tonic::transport::Channel;
use tonic::Code;

const MESSAGE_BYTES: usize = 8 << 20;
const BUDGET_BYTES: usize = 16 << 20;
const ADMITTED: usize = 24;
const DIM: usize = 1024;
const CONNECTIONS: usize = 8;

/// Just under `MESSAGE_BYTES` of items one dimension too long for the collection, so
/// each is decoded, checked and refused (INVALID_ARGUMENT) without being stored.
fn flood_request() -> UpsertRequest {
    UpsertRequest {
        collection: "flood".into(),
        items: (0..1990)
            .map(|n| Item {
                id: format!("i{n}"),
                content: Some(item::Content::Vector(Vector {
                    values: vec![0.5; DIM + 1],
                })),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_maximum_size_requests_stays_under_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = common::plugin_dir().display().to_string();
    let (message, budget, admitted) = (
        MESSAGE_BYTES.to_string(),
        BUDGET_BYTES.to_string(),
        ADMITTED.to_string(),
    );
    let server = Server::start_with_env(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--plugin-dir",
            &plugins,
        ],
        &[
            ("MARQUEE_LIMITS__MAX_MESSAGE_BYTES", &message),
            ("MARQUEE_LIMITS__MAX_REQUEST_MEMORY_BYTES", &budget),
            ("MARQUEE_LIMITS__MAX_CONCURRENT_REQUESTS", &admitted),
        ],
    );
    let request = flood_request();
    let encoded = prost::Message::encoded_len(&request);
    assert!(encoded < MESSAGE_BYTES && encoded > MESSAGE_BYTES - (256 << 10));
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(server.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(
            RetrievalServiceClient::new(channel)
                .max_encoding_message_size(MESSAGE_BYTES)
                .max_decoding_message_size(MESSAGE_BYTES),
        );
    }
    clients[0]
        .create_collection(CreateCollectionRequest {
            name: "flood".into(),
            dimension: DIM as u32,
            ..Default::default()
        })
        .await
        .unwrap();
    // Warm up (one request handled), then the idle figure.
    let warm = clients[0]
        .upsert(tokio_stream::iter([request.clone()]))
        .await
        .unwrap_err();
    assert_eq!(warm.code(), Code::InvalidArgument, "{warm:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let idle_kib = server.memory_kib("VmRSS");

    let (mut handled, mut refused_memory, mut refused_admission) = (0, 0, 0);
    for _round in 0..2 {
        let calls: Vec<_> = (0..ADMITTED * 10)
            .map(|i| {
                let mut client = clients[i % CONNECTIONS].clone();
                let request = request.clone();
                tokio::spawn(async move {
                    client
                        .upsert(tokio_stream::iter([request]))
                        .await
                        .unwrap_err()
                })
            })
            .collect();
        for call in calls {
            let status = call.await.unwrap();
            match status.code() {
                Code::InvalidArgument => handled += 1,
                Code::ResourceExhausted if status.message().contains("request bytes") => {
                    refused_memory += 1
                }
                Code::ResourceExhausted => refused_admission += 1,
                _ => panic!("unexpected {status:?}"),
            }
        }
    }
    let peak_kib = server.memory_kib("VmHWM");
    let bound_kib = idle_kib + (3 * BUDGET_BYTES as u64 + (32 << 20)) / 1024;
    eprintln!(
        "idle RSS {} MiB, peak {} MiB, bound {} MiB; {handled} handled, {refused_memory} refused \
         by the memory budget, {refused_admission} by admission",
        idle_kib / 1024,
        peak_kib / 1024,
        bound_kib / 1024
    );
    assert!(handled > 0, "nothing got through");
    assert!(refused_memory > 0, "the budget never refused");
    assert!(
        server.metric("marquee_request_memory_refusals_total") >= refused_memory as f64,
        "the refusals are counted"
    );
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB"
    );
}
