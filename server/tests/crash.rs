//! Crash safety: upserts and ratings stream into a real server that is killed with
//! SIGKILL at random moments; after each restart every acknowledged write is there,
//! and search answers exactly as a server that never crashed.

mod common;

use common::Server;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{
    item, search_request, value::Kind, CreateCollectionRequest, GetCollectionRequest, GetRequest,
    Item, Metric, Rating, RecordRatingsRequest, SearchRequest, UpsertRequest, Value, Vector,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Channel;

const DIM: usize = 8;
const ROUNDS: usize = 20;

fn vector(i: u64) -> Vec<f32> {
    (0..DIM as u64)
        .map(|j| (((i * 31 + j * 17) % 23) as f32 - 11.0) / 7.0 + 0.01)
        .collect()
}

fn create_request(name: &str) -> CreateCollectionRequest {
    CreateCollectionRequest {
        name: name.into(),
        dimension: DIM as u32,
        metric: Metric::Cosine as i32,
        ..Default::default()
    }
}

fn server(dir: &std::path::Path) -> Server {
    Server::storage(dir)
}

async fn connect(server: &Server) -> RetrievalServiceClient<Channel> {
    server.retrieval().await
}

fn batch(round: usize, b: u64) -> Vec<Item> {
    (0..25)
        .map(|i| {
            let n = b * 25 + i;
            Item {
                id: format!("i{n:06}"),
                content: Some(item::Content::Vector(Vector {
                    values: vector(n + round as u64),
                })),
                payload: [(
                    "n".to_string(),
                    Value {
                        kind: Some(Kind::IntValue(n as i64)),
                    },
                )]
                .into(),
            }
        })
        .collect()
}

async fn search_all(
    client: &mut RetrievalServiceClient<Channel>,
    collection: &str,
) -> Vec<Vec<(String, f32)>> {
    let mut out = Vec::new();
    for q in 0..5 {
        let hits = client
            .search(SearchRequest {
                collection: collection.into(),
                query: Some(search_request::Query::Vector(Vector {
                    values: vector(1000 + q),
                })),
                k: 20,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .hits;
        out.push(hits.into_iter().map(|h| (h.id, h.score)).collect());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let collection = "crashy";
    {
        let s = server(dir.path());
        let mut c = connect(&s).await;
        c.create_collection(create_request(collection))
            .await
            .unwrap();
    }
    // Acknowledged state: item id → vector, user → ratings.
    let mut items: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut ratings: BTreeMap<String, usize> = BTreeMap::new();
    let mut seed = 12345u64;
    for round in 0..ROUNDS {
        let s = server(dir.path());
        let mut c = connect(&s).await;
        // Everything acknowledged so far is there, exactly.
        let ids: Vec<String> = items.keys().cloned().collect();
        let got = c
            .get(GetRequest {
                collection: collection.into(),
                ids: ids.clone(),
                with_vectors: true,
                with_texts: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            got.missing.is_empty(),
            "round {round}: lost {:?}",
            &got.missing[..got.missing.len().min(5)]
        );
        for it in &got.items {
            let want = &items[&it.id];
            let norm = want.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                it.vector
                    .iter()
                    .zip(want)
                    .all(|(a, b)| (a - b / norm).abs() < 1e-6),
                "round {round}: {} changed",
                it.id
            );
        }
        let info = c
            .get_collection(GetCollectionRequest {
                name: collection.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            info.ratings as usize >= ratings.values().sum::<usize>(),
            "round {round}: ratings lost"
        );

        // Write until killed at a random moment.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let kill_after = Duration::from_millis(20 + (seed >> 33) % 150);
        let writer = {
            let mut c = c.clone();
            tokio::spawn(async move {
                let mut acked_items = Vec::new();
                let mut acked_ratings = Vec::new();
                for b in 0.. {
                    let items = batch(round, round as u64 * 1000 + b);
                    let message = UpsertRequest {
                        collection: collection.into(),
                        items: items.clone(),
                    };
                    match c.upsert(tokio_stream::iter(vec![message])).await {
                        Ok(_) => acked_items.extend(items),
                        Err(_) => break,
                    }
                    let user = format!("u{}", b % 7);
                    let r = vec![
                        Rating {
                            item_id: format!("i{:06}", b),
                            rating: 4.5,
                            timestamp: b as i64
                        };
                        3
                    ];
                    let message = RecordRatingsRequest {
                        collection: collection.into(),
                        user_id: user.clone(),
                        ratings: r,
                    };
                    match c.record_ratings(tokio_stream::iter(vec![message])).await {
                        Ok(_) => acked_ratings.push((user, 3)),
                        Err(_) => break,
                    }
                }
                (acked_items, acked_ratings)
            })
        };
        tokio::time::sleep(kill_after).await;
        drop(s); // SIGKILL
        let (acked_items, acked_ratings) = writer.await.unwrap();
        for it in acked_items {
            let Some(item::Content::Vector(v)) = it.content else {
                unreachable!()
            };
            items.insert(it.id, v.values);
        }
        for (user, n) in acked_ratings {
            *ratings.entry(user).or_default() += n;
        }
    }
    assert!(
        items.len() > 100,
        "the writers got through: {} items",
        items.len()
    );

    // A server that never crashed, fed exactly what the crashed one holds, answers alike.
    let crashed = server(dir.path());
    let mut c = connect(&crashed).await;
    let info = c
        .get_collection(GetCollectionRequest {
            name: collection.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let all_ids: Vec<String> = (0..ROUNDS as u64 * 1000 * 25)
        .map(|n| format!("i{n:06}"))
        .collect();
    let mut present = Vec::new();
    for chunk in all_ids.chunks(5000) {
        let got = c
            .get(GetRequest {
                collection: collection.into(),
                ids: chunk.to_vec(),
                with_vectors: true,
                with_texts: false,
            })
            .await
            .unwrap()
            .into_inner();
        present.extend(got.items);
    }
    assert_eq!(present.len() as u64, info.items);
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = server(clean_dir.path());
    let mut fresh = connect(&clean).await;
    fresh
        .create_collection(create_request(collection))
        .await
        .unwrap();
    let items: Vec<Item> = present
        .into_iter()
        .map(|s| Item {
            id: s.id,
            content: Some(item::Content::Vector(Vector { values: s.vector })),
            payload: s.payload,
        })
        .collect();
    fresh
        .upsert(tokio_stream::iter(vec![UpsertRequest {
            collection: collection.into(),
            items,
        }]))
        .await
        .unwrap();
    // Same ids in the same order; scores equal to rounding (the clean copy re-normalises
    // the already unit vectors it was given).
    let (after_crashes, never_crashed) = (
        search_all(&mut c, collection).await,
        search_all(&mut fresh, collection).await,
    );
    for (a, b) in after_crashes.iter().zip(&never_crashed) {
        assert_eq!(
            a.iter().map(|h| &h.0).collect::<Vec<_>>(),
            b.iter().map(|h| &h.0).collect::<Vec<_>>()
        );
        assert!(a.iter().zip(b).all(|(x, y)| (x.1 - y.1).abs() < 1e-6));
    }
}
