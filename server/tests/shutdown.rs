//! Graceful shutdown: SIGTERM with embeds and upserts in flight answers all of them,
//! ends the calls that never end by themselves (health Watch, EmbedStream), exits 0,
//! and every acknowledged write is there after a restart. A call that holds the drain
//! open is cut by the grace period or a second signal.

mod common;

use common::{eventually, Server};
use marquee_client::proto::{
    item, CreateCollectionRequest, EmbedRequest, GetRequest, Item, Metric, UpsertRequest,
};
use std::path::Path;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::HealthCheckRequest;

const EMBEDS: usize = 6;
const UPSERTS: usize = 4;
const ITEMS: usize = 6;

fn server(data: &Path, env: &[(&str, &str)]) -> Server {
    Server::minilm_with_env(&["--data-dir", data.to_str().unwrap()], env)
}

fn text_items(upsert: usize) -> Vec<Item> {
    (0..ITEMS)
        .map(|i| Item {
            id: format!("u{upsert}-{i}"),
            content: Some(item::Content::Text(format!(
                "film {upsert}-{i}: {}",
                "a slow story about a family running a lighthouse hotel ".repeat(20)
            ))),
            ..Default::default()
        })
        .collect()
}

fn in_flight_or_done(server: &Server) -> f64 {
    let body = server.scrape_metrics();
    ["Embed", "Upsert"]
        .iter()
        .map(|rpc| {
            common::metric_value(
                &body,
                &format!(r#"marquee_requests_in_flight{{rpc="{rpc}"}}"#),
            ) + common::metric_value(
                &body,
                &format!(r#"marquee_requests_total{{rpc="{rpc}",code="Ok"}}"#),
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_the_calls_in_flight_and_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(
        dir.path(),
        &[
            ("MARQUEE_BATCHING__MAX_BATCH_SIZE", "1"),
            ("MARQUEE_SHUTDOWN_GRACE_SECS", "300"),
        ],
    );
    let client = server.client().await;
    client
        .retrieval
        .clone()
        .create_collection(CreateCollectionRequest {
            name: "films".into(),
            dimension: 384,
            metric: Metric::Cosine as i32,
            model: "minilm".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Two calls with no natural end: a health Watch and an idle EmbedStream.
    let mut watch = server
        .health()
        .await
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let (_stream_tx, stream_rx) = tokio::sync::mpsc::channel::<EmbedRequest>(1);
    let mut embed_stream = client
        .embedding
        .clone()
        .embed_stream(ReceiverStream::new(stream_rx))
        .await
        .unwrap()
        .into_inner();

    // A slow burst: the model runs one input per batch.
    let long = "a heist film where the crew is double-crossed at the border ".repeat(20);
    let mut embeds = Vec::new();
    for _ in 0..EMBEDS {
        let mut c = client.clone();
        let texts = vec![long.clone(); 8];
        embeds.push(tokio::spawn(async move {
            c.embed_texts("minilm", &texts).await
        }));
    }
    let mut upserts = Vec::new();
    for u in 0..UPSERTS {
        let mut retrieval = client.retrieval.clone();
        upserts.push(tokio::spawn(async move {
            let message = UpsertRequest {
                collection: "films".into(),
                items: text_items(u),
            };
            retrieval
                .upsert(tokio_stream::iter(vec![message]))
                .await
                .map(|r| r.into_inner().upserted)
        }));
    }
    // Every call has reached the server; then SIGTERM.
    let calls = (EMBEDS + UPSERTS) as f64;
    assert!(eventually(|| in_flight_or_done(&server) >= calls).await);
    let in_flight = server.metric(r#"marquee_requests_in_flight{rpc="Embed"}"#)
        + server.metric(r#"marquee_requests_in_flight{rpc="Upsert"}"#);
    server.signal("TERM");
    assert!(in_flight >= 1.0, "nothing was in flight at SIGTERM");

    for task in embeds {
        let vectors = task
            .await
            .unwrap()
            .expect("embed answered during the drain");
        assert_eq!(vectors.len(), 8);
    }
    for task in upserts {
        let upserted = task
            .await
            .unwrap()
            .expect("upsert answered during the drain");
        assert_eq!(upserted, ITEMS as u64);
    }
    // The never-ending calls were closed: Watch after NOT_SERVING, EmbedStream with
    // UNAVAILABLE.
    let last = watch.message().await.unwrap().unwrap();
    assert_eq!(last.status, ServingStatus::NotServing as i32);
    assert!(watch.message().await.unwrap().is_none());
    let status = embed_stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let exit = server
        .wait_exit(Duration::from_secs(120))
        .expect("the server exits after the drain");
    assert!(exit.success(), "{exit:?}");
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(log.contains("collections flushed"), "{log}");
    assert!(!log.contains("grace period over"), "{log}");

    // Every acknowledged write is there after a restart.
    let restarted = self::server(dir.path(), &[]);
    let ids: Vec<String> = (0..UPSERTS)
        .flat_map(|u| (0..ITEMS).map(move |i| format!("u{u}-{i}")))
        .collect();
    let got = restarted
        .client()
        .await
        .retrieval
        .get(GetRequest {
            collection: "films".into(),
            ids: ids.clone(),
            with_vectors: true,
            with_texts: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.missing.is_empty(), "{:?}", got.missing);
    assert_eq!(got.items.len(), ids.len());
    assert!(got.items.iter().all(|i| i.vector.len() == 384));
}

/// Opens an Upsert stream that sends nothing and never ends; returns its sender.
async fn stuck_upsert(server: &Server) -> tokio::sync::mpsc::Sender<UpsertRequest> {
    let (tx, rx) = tokio::sync::mpsc::channel::<UpsertRequest>(1);
    let mut retrieval = server.client().await.retrieval;
    tokio::spawn(async move { retrieval.upsert(ReceiverStream::new(rx)).await });
    assert!(
        eventually(|| server.metric(r#"marquee_requests_in_flight{rpc="Upsert"}"#) == 1.0).await
    );
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grace_period_ends_a_drain_held_open_by_a_stuck_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), &[("MARQUEE_SHUTDOWN_GRACE_SECS", "1")]);
    let _open = stuck_upsert(&server).await;
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(60)).expect("exits");
    assert!(exit.success(), "{exit:?}");
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("grace period over"), "{log}");
    assert!(log.contains("collections flushed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_sigint_ends_the_drain_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), &[("MARQUEE_SHUTDOWN_GRACE_SECS", "3600")]);
    let _open = stuck_upsert(&server).await;
    server.signal("INT");
    assert!(server.wait_for_log("shutdown requested"));
    server.signal("INT");
    let exit = server.wait_exit(Duration::from_secs(60)).expect("exits");
    assert!(exit.success(), "{exit:?}");
    assert!(server.wait_for_log("second signal"));
}
