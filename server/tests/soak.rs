//! Crash soak: several clients upsert, overwrite, delete and rate at once while the
//! server is killed with SIGKILL at random moments; after each restart the collection
//! is checked against a model of every acknowledged write. The one call each client had
//! in flight at the kill may or may not have landed; everything else must be exactly as
//! acknowledged.
//!
//! `MARQUEE_SOAK_ROUNDS` kill cycles (5 by default, so the suite stays quick;
//! `scripts/soak.sh` runs 100).

mod common;

use common::Server;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{
    item, CreateCollectionRequest, DeleteRequest, GetCollectionRequest, GetRequest, Item, Metric,
    Rating, RecordRatingsRequest, UpsertRequest, Vector,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const DIM: usize = 8;
const CLIENTS: usize = 4;
/// Ids each client writes: `c{client}-{0..IDS}`.
const IDS: u64 = 200;
const COLLECTION: &str = "soak";

type Client = RetrievalServiceClient<Channel>;
/// Item id → unit vector, for the items that exist.
type Items = BTreeMap<String, Vec<f32>>;

/// A small deterministic generator (64-bit LCG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn unit(values: &[f32]) -> Vec<f32> {
    let norm = values.iter().map(|x| x * x).sum::<f32>().sqrt();
    values.iter().map(|x| x / norm).collect()
}

/// One write and what it changes, known before it is sent.
enum Write {
    Upsert(Vec<(String, Vec<f32>)>),
    Delete(Vec<String>),
    Ratings(usize),
}

impl Write {
    fn random(client: usize, rng: &mut Rng) -> Write {
        let id = |rng: &mut Rng| format!("c{client}-{}", rng.next() % IDS);
        match rng.next() % 4 {
            0 | 1 => Write::Upsert(
                (0..10)
                    .map(|_| {
                        let v: Vec<f32> = (0..DIM)
                            .map(|_| (rng.next() % 1000) as f32 / 100.0 - 4.95)
                            .collect();
                        (id(rng), v)
                    })
                    .collect(),
            ),
            2 => Write::Delete((0..5).map(|_| id(rng)).collect()),
            _ => Write::Ratings(2),
        }
    }

    /// Sends it; `Ok` once acknowledged.
    async fn send(&self, c: &mut Client, client: usize, n: u64) -> Result<(), tonic::Status> {
        match self {
            Write::Upsert(items) => {
                let items = items
                    .iter()
                    .map(|(id, v)| Item {
                        id: id.clone(),
                        content: Some(item::Content::Vector(Vector { values: v.clone() })),
                        ..Default::default()
                    })
                    .collect();
                let message = UpsertRequest {
                    collection: COLLECTION.into(),
                    items,
                };
                c.upsert(tokio_stream::iter([message])).await.map(|_| ())
            }
            Write::Delete(ids) => c
                .delete(DeleteRequest {
                    collection: COLLECTION.into(),
                    ids: ids.clone(),
                })
                .await
                .map(|_| ()),
            Write::Ratings(count) => {
                let message = RecordRatingsRequest {
                    collection: COLLECTION.into(),
                    user_id: format!("c{client}-u{}", n % 3),
                    ratings: (0..*count)
                        .map(|i| Rating {
                            item_id: format!("c{client}-{}", (n + i as u64) % IDS),
                            rating: 4.0,
                            timestamp: n as i64,
                        })
                        .collect(),
                };
                c.record_ratings(tokio_stream::iter([message]))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// The model after it landed; returns the ratings it adds.
    fn apply(&self, items: &mut Items) -> u64 {
        match self {
            Write::Upsert(new) => {
                for (id, v) in new {
                    items.insert(id.clone(), unit(v));
                }
            }
            Write::Delete(ids) => ids.iter().for_each(|id| {
                items.remove(id);
            }),
            Write::Ratings(count) => return *count as u64,
        }
        0
    }
}

/// One client's acknowledged items, and the write it had in flight when the server died.
struct Model {
    items: Items,
    in_flight: Option<Write>,
}

/// What the server holds of `client`'s ids.
async fn stored(c: &mut Client, client: usize) -> Items {
    let got = c
        .get(GetRequest {
            collection: COLLECTION.into(),
            ids: (0..IDS).map(|n| format!("c{client}-{n}")).collect(),
            with_vectors: true,
            with_texts: false,
        })
        .await
        .unwrap()
        .into_inner();
    got.items.into_iter().map(|i| (i.id, i.vector)).collect()
}

fn same(a: &Items, b: &Items) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ia, va), (ib, vb))| {
            ia == ib && va.iter().zip(vb).all(|(x, y)| (x - y).abs() < 1e-5)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_nothing_acknowledged_across_sigkills() {
    let rounds: usize = std::env::var("MARQUEE_SOAK_ROUNDS")
        .ok()
        .map_or(5, |v| v.parse().expect("MARQUEE_SOAK_ROUNDS: a number"));
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Server::storage(dir.path());
        let mut c = s.retrieval().await;
        c.create_collection(CreateCollectionRequest {
            name: COLLECTION.into(),
            dimension: DIM as u32,
            metric: Metric::Cosine as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut models: Vec<Model> = (0..CLIENTS)
        .map(|_| Model {
            items: Items::new(),
            in_flight: None,
        })
        .collect();
    // Ratings acknowledged (or seen stored), and sent by writes in flight at the kill.
    let (mut ratings, mut ratings_in_flight) = (0u64, 0u64);
    let mut rng = Rng(20261206);
    let (started, mut acked_writes, mut undecided) = (Instant::now(), 0u64, 0u64);
    for round in 0..=rounds {
        let s = Server::storage(dir.path());
        let mut c = s.retrieval().await;
        // Check every client's ids against its model; the write in flight at the kill
        // may have landed or not, and the model takes what is there.
        for (client, model) in models.iter_mut().enumerate() {
            let held = stored(&mut c, client).await;
            let mut landed = model.items.clone();
            if let Some(write) = model.in_flight.take() {
                ratings_in_flight += write.apply(&mut landed);
                undecided += 1;
            }
            if same(&held, &model.items) {
            } else if same(&held, &landed) {
                model.items = landed;
            } else {
                let lost: Vec<_> = model
                    .items
                    .keys()
                    .filter(|k| !held.contains_key(*k))
                    .collect();
                panic!(
                    "round {round}, client {client}: the stored items are neither the \
                     acknowledged state nor it plus the write in flight (missing {:?})",
                    &lost[..lost.len().min(5)]
                );
            }
        }
        let info = c
            .get_collection(GetCollectionRequest {
                name: COLLECTION.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            (ratings..=ratings + ratings_in_flight).contains(&info.ratings),
            "round {round}: {} ratings stored, {ratings} acknowledged, {ratings_in_flight} more in flight",
            info.ratings
        );
        // The in-flight ratings that landed count from now on.
        (ratings, ratings_in_flight) = (info.ratings, 0);
        if round == rounds {
            break;
        }

        // Write from every client until killed at a random moment.
        let kill_after = Duration::from_millis(30 + rng.next() % 250);
        let writers: Vec<_> = models
            .iter_mut()
            .enumerate()
            .map(|(client, model)| {
                let mut c = c.clone();
                let mut rng = Rng(rng.next() ^ client as u64);
                let mut items = std::mem::take(&mut model.items);
                tokio::spawn(async move {
                    let (mut acked, mut ratings) = (0u64, 0u64);
                    for n in 0.. {
                        let write = Write::random(client, &mut rng);
                        if write.send(&mut c, client, n).await.is_err() {
                            return (items, ratings, Some(write), acked);
                        }
                        ratings += write.apply(&mut items);
                        acked += 1;
                    }
                    unreachable!()
                })
            })
            .collect();
        tokio::time::sleep(kill_after).await;
        drop(s); // SIGKILL
        for (model, writer) in models.iter_mut().zip(writers) {
            let (items, acked_ratings, in_flight, acked) = writer.await.unwrap();
            (model.items, model.in_flight) = (items, in_flight);
            ratings += acked_ratings;
            acked_writes += acked;
        }
    }
    eprintln!(
        "{rounds} SIGKILL cycles, {CLIENTS} clients: {acked_writes} acknowledged writes checked, \
         {undecided} in flight at a kill, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(acked_writes > rounds as u64 * 10, "the writers got through");
}
