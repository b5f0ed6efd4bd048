//! RetrievalService and EvaluationService against a real server: collections, items,
//! filters, recommendations, evaluation, restarts, HNSW, and bad input.

mod common;

use common::Server;
use marquee_client::proto::evaluation_service_client::EvaluationServiceClient;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{
    condition::Test, eval_query, evaluation_event::Event, index_config, item, recommend_request,
    search_request, value::Kind, Condition, CreateCollectionRequest, DeleteCollectionRequest,
    DeleteRequest, EvalQuery, EvaluateRecommendationsRequest, EvaluateRetrievalRequest,
    EvaluationReport, Filter, GetRequest, HnswIndex, IndexConfig, Item, Metric, Range, Rating,
    RecommendRequest, RecordRatingsRequest, SearchRequest, StringList, UpsertRequest, UserRatings,
    Value, Vector,
};
use std::collections::HashMap;
use tonic::transport::Channel;
use tonic::Code;

type Retrieval = RetrievalServiceClient<Channel>;

async fn clients(server: &Server) -> (Retrieval, EvaluationServiceClient<Channel>) {
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (
        RetrievalServiceClient::new(channel.clone()),
        EvaluationServiceClient::new(channel),
    )
}

fn vector_server(dir: &std::path::Path) -> Server {
    Server::start(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--plugin-dir",
        &common::plugin_dir().display().to_string(),
    ])
}

fn create(name: &str, dim: u32, metric: Metric) -> CreateCollectionRequest {
    CreateCollectionRequest {
        name: name.into(),
        dimension: dim,
        metric: metric as i32,
        ..Default::default()
    }
}

fn item(id: &str, v: &[f32], payload: &[(&str, Kind)]) -> Item {
    Item {
        id: id.into(),
        content: Some(item::Content::Vector(Vector { values: v.to_vec() })),
        payload: payload
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect(),
    }
}

fn movie(id: &str, v: &[f32], year: i64, genres: &[&str]) -> Item {
    item(
        id,
        v,
        &[
            ("year", Kind::IntValue(year)),
            ("title", Kind::StringValue(format!("Film {id}"))),
            (
                "genres",
                Kind::ListValue(StringList {
                    values: genres.iter().map(|g| g.to_string()).collect(),
                }),
            ),
        ],
    )
}

async fn upsert(
    client: &mut Retrieval,
    collection: &str,
    batches: Vec<Vec<Item>>,
) -> Result<u64, tonic::Status> {
    let messages: Vec<UpsertRequest> = batches
        .into_iter()
        .map(|items| UpsertRequest {
            collection: collection.into(),
            items,
        })
        .collect();
    Ok(client
        .upsert(tokio_stream::iter(messages))
        .await?
        .into_inner()
        .upserted)
}

fn by_vector(collection: &str, v: &[f32], k: u32) -> SearchRequest {
    SearchRequest {
        collection: collection.into(),
        query: Some(search_request::Query::Vector(Vector { values: v.to_vec() })),
        k,
        ..Default::default()
    }
}

async fn ids(client: &mut Retrieval, request: SearchRequest) -> Vec<String> {
    client
        .search(request)
        .await
        .unwrap()
        .into_inner()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn cond(field: &str, test: Test) -> Filter {
    Filter {
        must: vec![Condition {
            field: field.into(),
            test: Some(test),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_items_search_filters_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = vector_server(dir.path());
    let (mut c, _) = clients(&server).await;

    let info = c
        .create_collection(create("movies", 3, Metric::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.dimension, info.metric), (3, Metric::Cosine as i32));
    assert_eq!(
        c.create_collection(create("movies", 3, Metric::Cosine))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    for bad in ["../x", ".", ".."] {
        let e = c
            .create_collection(create(bad, 3, Metric::Cosine))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("must be letters"), "{bad}: {e:?}");
    }
    assert_eq!(
        c.create_collection(create("zero", 0, Metric::Cosine))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let stored = upsert(
        &mut c,
        "movies",
        vec![
            vec![
                movie("a", &[1.0, 0.0, 0.0], 1994, &["Drama"]),
                movie("b", &[1.0, 0.0, 0.0], 2001, &["Drama", "Crime"]),
                movie("c", &[0.9, 0.1, 0.0], 1985, &["Comedy"]),
            ],
            vec![
                movie("d", &[0.0, 1.0, 0.0], 2010, &["Drama"]),
                movie("e", &[0.0, 0.0, 2.0], 1999, &["Horror"]),
            ],
        ],
    )
    .await
    .unwrap();
    assert_eq!(stored, 5);

    // Exact ties (a, b) are broken by id; results are best first.
    assert_eq!(
        ids(&mut c, by_vector("movies", &[2.0, 0.0, 0.0], 3)).await,
        ["a", "b", "c"]
    );
    let hits = c
        .search(by_vector("movies", &[1.0, 0.0, 0.0], 5))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert!((hits[0].score - 1.0).abs() < 1e-6 && hits.len() == 5);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    // Filters: range, list membership, equality; k results whenever k items match.
    let mut r = by_vector("movies", &[1.0, 0.0, 0.0], 2);
    r.filter = Some(cond(
        "year",
        Test::Range(Range {
            gte: Some(1995.0),
            ..Default::default()
        }),
    ));
    assert_eq!(ids(&mut c, r.clone()).await, ["b", "d"]);
    r.filter = Some(cond("genres", Test::Contains("Drama".into())));
    r.with_payload = true;
    let hits = c.search(r.clone()).await.unwrap().into_inner().hits;
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        hits[0].payload["title"].kind,
        Some(Kind::StringValue("Film a".into()))
    );
    r.filter = Some(cond(
        "title",
        Test::Equals(Value {
            kind: Some(Kind::StringValue("Film e".into())),
        }),
    ));
    assert_eq!(ids(&mut c, r.clone()).await, ["e"]);
    for (bad, needle) in [
        (cond("rating", Test::Contains("x".into())), "unknown field"),
        (cond("year", Test::Contains("x".into())), "no contains test"),
        (
            cond("title", Test::Range(Range::default())),
            "no range test",
        ),
    ] {
        r.filter = Some(bad);
        let e = c.search(r.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(needle), "{}", e.message());
    }

    // By stored item: the item itself is left out.
    let by_item = SearchRequest {
        collection: "movies".into(),
        query: Some(search_request::Query::ItemId("a".into())),
        k: 2,
        ..Default::default()
    };
    assert_eq!(ids(&mut c, by_item).await, ["b", "c"]);

    // Bad input: nothing stored half-way, the server keeps answering.
    let e = upsert(
        &mut c,
        "movies",
        vec![vec![
            movie("f", &[1.0, 0.0, 0.0], 2000, &[]),
            movie("g", &[1.0, 0.0], 2000, &[]),
        ]],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("2 dimensions, collection movies has 3"),
        "{}",
        e.message()
    );
    let e = upsert(
        &mut c,
        "movies",
        vec![vec![movie("h", &[f32::NAN, 0.0, 0.0], 2000, &[])]],
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("NaN"), "{}", e.message());
    let e = upsert(
        &mut c,
        "movies",
        vec![vec![item(
            "i",
            &[1.0, 0.0, 0.0],
            &[("year", Kind::StringValue("x".into()))],
        )]],
    )
    .await
    .unwrap_err();
    assert!(
        e.message()
            .contains("year is String but the collection stores it as Int"),
        "{}",
        e.message()
    );
    let e = upsert(
        &mut c,
        "movies",
        vec![vec![Item {
            id: "t".into(),
            content: Some(item::Content::Text("words".into())),
            payload: HashMap::new(),
        }]],
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("has no model"), "{}", e.message());
    let got = c
        .get(GetRequest {
            collection: "movies".into(),
            ids: vec!["f".into(), "e".into()],
            with_vectors: true,
            with_texts: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.missing, ["f"]);
    assert_eq!(
        got.items[0].vector,
        [0.0, 0.0, 1.0],
        "cosine collections store unit vectors"
    );
    for k in [0, 1025] {
        assert_eq!(
            c.search(by_vector("movies", &[1.0, 0.0, 0.0], k))
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }
    assert_eq!(
        c.search(by_vector("movies", &[0.0, 0.0, 0.0], 1))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.search(by_vector("nope", &[1.0, 0.0, 0.0], 1))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Delete and overwrite.
    let deleted = c
        .delete(DeleteRequest {
            collection: "movies".into(),
            ids: vec!["a".into(), "zz".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    upsert(
        &mut c,
        "movies",
        vec![vec![movie("b", &[0.0, 0.0, 1.0], 2001, &[])]],
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&mut c, by_vector("movies", &[1.0, 0.0, 0.0], 1)).await,
        ["c"]
    );
    let info = c
        .get_collection(marquee_client::proto::GetCollectionRequest {
            name: "movies".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.items, 4);

    c.delete_collection(DeleteCollectionRequest {
        name: "movies".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.search(by_vector("movies", &[1.0, 0.0, 0.0], 1))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(!dir.path().join("collections/movies").exists());
}

fn rating(item: &str, r: f32, ts: i64) -> Rating {
    Rating {
        item_id: item.into(),
        rating: r,
        timestamp: ts,
    }
}

/// Items on a circle: item i at angle i·10°.
fn circle() -> Vec<Item> {
    (0..36)
        .map(|i| {
            let a = (i as f32 * 10.0).to_radians();
            item(&format!("m{i:02}"), &[a.cos(), a.sin()], &[])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recommendations_average_liked_items_and_leave_out_seen_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = vector_server(dir.path());
    let (mut c, mut eval) = clients(&server).await;
    c.create_collection(create("circle", 2, Metric::Cosine))
        .await
        .unwrap();
    upsert(&mut c, "circle", vec![circle()]).await.unwrap();

    // Liked m01, m02, m05 (10°, 20°, 50°: mean direction 26.5°), disliked m07. Unseen
    // items by angle from 26.5°: m03 3.5°, m04 13.5°, m00 26.5°, m06 33.5°.
    let ratings = vec![
        rating("m01", 5.0, 1),
        rating("m02", 4.0, 2),
        rating("m05", 4.0, 3),
        rating("m07", 2.0, 4),
    ];
    let recorded = c
        .record_ratings(tokio_stream::iter(vec![RecordRatingsRequest {
            collection: "circle".into(),
            user_id: "u1".into(),
            ratings: ratings.clone(),
        }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recorded.recorded, 4);
    let recommend = |user: recommend_request::User| RecommendRequest {
        collection: "circle".into(),
        user: Some(user),
        k: 4,
        ..Default::default()
    };
    let got: Vec<String> = c
        .recommend(recommend(recommend_request::User::UserId("u1".into())))
        .await
        .unwrap()
        .into_inner()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(got, ["m03", "m04", "m00", "m06"]);
    let inline: Vec<String> = c
        .recommend(recommend(recommend_request::User::Ratings(UserRatings {
            ratings,
        })))
        .await
        .unwrap()
        .into_inner()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(inline, got);
    let mut include_seen = recommend(recommend_request::User::UserId("u1".into()));
    include_seen.exclude_seen = Some(false);
    let with_seen: Vec<String> = c
        .recommend(include_seen)
        .await
        .unwrap()
        .into_inner()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(with_seen, ["m03", "m02", "m04", "m01"]);

    let e = c
        .recommend(recommend(recommend_request::User::UserId("ghost".into())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .recommend(recommend(recommend_request::User::Ratings(UserRatings {
            ratings: vec![rating("m01", 3.0, 0)],
        })))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("no rating >= 4"), "{}", e.message());

    // Leave-one-out: u2 likes m10, m13, m14, m15, then m16 (latest, held out). The
    // profile points at 130.2°; unseen items by angle: m12 10.2°, m11 20.2°, m16 29.8°,
    // so the held-out item ranks third among the catalog (items anyone rated; m09, never
    // rated, is not a candidate). u1, u3 and u4 have too few high ratings.
    let mut stream = vec![];
    let u2: Vec<Rating> = [10, 13, 14, 15, 16]
        .iter()
        .map(|&i| rating(&format!("m{i}"), 5.0, i))
        .collect();
    stream.push(RecordRatingsRequest {
        collection: "circle".into(),
        user_id: "u2".into(),
        ratings: u2,
    });
    stream.push(RecordRatingsRequest {
        collection: "circle".into(),
        user_id: "u3".into(),
        ratings: vec![rating("m20", 5.0, 1)],
    });
    // u4 puts m11 and m12 in the catalog (items anyone rated) without liking them.
    stream.push(RecordRatingsRequest {
        collection: "circle".into(),
        user_id: "u4".into(),
        ratings: vec![rating("m11", 2.0, 1), rating("m12", 1.0, 2)],
    });
    c.record_ratings(tokio_stream::iter(stream)).await.unwrap();
    let mut events = eval
        .evaluate_recommendations(EvaluateRecommendationsRequest {
            collection: "circle".into(),
            cutoffs: vec![1, 5, 10],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut report: Option<EvaluationReport> = None;
    let mut progress = 0;
    while let Some(e) = events.message().await.unwrap() {
        match e.event.unwrap() {
            Event::Progress(_) => progress += 1,
            Event::Report(r) => report = Some(r),
            Event::Generation(_) => panic!("a generation report for a recommendation run"),
        }
    }
    let report = report.unwrap();
    assert!(progress >= 1);
    assert_eq!((report.queries, report.skipped), (1, 3));
    let m = report.metrics.unwrap().values;
    assert_eq!(m["recall@1"], 0.0);
    assert_eq!(m["recall@5"], 1.0);
    assert!((m["ndcg@5"] - 0.5).abs() < 1e-9, "{m:?}");
    assert!((m["mrr@10"] - 1.0 / 3.0).abs() < 1e-9, "{m:?}");
    let baseline = report.baseline.unwrap().values;
    assert!(baseline.contains_key("recall@10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evaluate_retrieval_scores_and_refuses_bad_query_sets() {
    let dir = tempfile::tempdir().unwrap();
    let server = vector_server(dir.path());
    let (mut c, eval) = clients(&server).await;
    c.create_collection(create("circle", 2, Metric::InnerProduct))
        .await
        .unwrap();
    upsert(&mut c, "circle", vec![circle()]).await.unwrap();
    let q = |id: &str, angle: f32, relevant: &[&str]| EvalQuery {
        query_id: id.into(),
        query: Some(eval_query::Query::Vector(Vector {
            values: vec![angle.to_radians().cos(), angle.to_radians().sin()],
        })),
        relevant: relevant.iter().map(|s| s.to_string()).collect(),
    };
    let run = |queries: Vec<Vec<EvalQuery>>| {
        let mut messages: Vec<EvaluateRetrievalRequest> = queries
            .into_iter()
            .map(|queries| EvaluateRetrievalRequest {
                queries,
                ..Default::default()
            })
            .collect();
        messages[0].collection = "circle".into();
        messages[0].cutoffs = vec![1, 3];
        messages[0].per_query = true;
        let mut eval = eval.clone();
        async move {
            let mut events = eval
                .evaluate_retrieval(tokio_stream::iter(messages))
                .await?
                .into_inner();
            let mut report = None;
            while let Some(e) = events.message().await? {
                if let Some(Event::Report(r)) = e.event {
                    report = Some(r);
                }
            }
            Ok::<_, tonic::Status>(report.unwrap())
        }
    };
    // From 2°: m00 is nearest, m01 second (8° away, m35 is 12°), m18 farthest of all 36.
    let report = run(vec![
        vec![q("q1", 2.0, &["m00"])],
        vec![q("q2", 2.0, &["m01"]), q("q3", 2.0, &["m18"])],
    ])
    .await
    .unwrap();
    let ranks: Vec<u32> = report
        .per_query
        .iter()
        .map(|r| r.first_relevant_rank)
        .collect();
    assert_eq!(ranks, [1, 2, 36]);
    let m = report.metrics.unwrap().values;
    assert!((m["recall@1"] - 1.0 / 3.0).abs() < 1e-9);
    assert!((m["recall@3"] - 2.0 / 3.0).abs() < 1e-9);
    assert!(
        (m["mrr"] - (1.0 + 0.5 + 1.0 / 36.0) / 3.0).abs() < 1e-9,
        "{m:?}"
    );
    assert!((m["mrr@1"] - 1.0 / 3.0).abs() < 1e-9);

    let e = run(vec![vec![q("q1", 0.0, &["nope"])]]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("\"nope\" is not in collection circle"),
        "{}",
        e.message()
    );
    let e = run(vec![vec![]]).await.unwrap_err();
    assert!(e.message().contains("empty"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let server = vector_server(dir.path());
        let (mut c, _) = clients(&server).await;
        c.create_collection(create("circle", 2, Metric::L2))
            .await
            .unwrap();
        upsert(&mut c, "circle", vec![circle()]).await.unwrap();
        c.delete(DeleteRequest {
            collection: "circle".into(),
            ids: vec!["m03".into()],
        })
        .await
        .unwrap();
        c.record_ratings(tokio_stream::iter(vec![RecordRatingsRequest {
            collection: "circle".into(),
            user_id: "u".into(),
            ratings: vec![rating("m01", 5.0, 1)],
        }]))
        .await
        .unwrap();
        let hits = c
            .search(by_vector("circle", &[1.0, 0.2], 5))
            .await
            .unwrap()
            .into_inner()
            .hits;
        assert!(
            hits[0].score <= 0.0,
            "L2 scores are negated squared distances"
        );
        hits
    };
    let server = vector_server(dir.path());
    let (mut c, _) = clients(&server).await;
    let after = c
        .search(by_vector("circle", &[1.0, 0.2], 5))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(before, after);
    let info = c
        .get_collection(marquee_client::proto::GetCollectionRequest {
            name: "circle".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.items, info.users, info.ratings), (35, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hnsw_finds_what_exact_search_finds() {
    let dir = tempfile::tempdir().unwrap();
    let server = vector_server(dir.path());
    let (mut c, _) = clients(&server).await;
    // Clustered data: 40 centres, 50 points each, 24 dimensions.
    let dim = 24;
    let mut seed = 7u64;
    let mut rand = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let centres: Vec<Vec<f32>> = (0..40)
        .map(|_| (0..dim).map(|_| rand()).collect())
        .collect();
    let items: Vec<Item> = (0..2000)
        .map(|i| {
            let v: Vec<f32> = centres[i % 40].iter().map(|x| x + 0.15 * rand()).collect();
            item(
                &format!("p{i:04}"),
                &v,
                &[("cluster", Kind::IntValue((i % 40) as i64))],
            )
        })
        .collect();
    for (name, index) in [
        ("exact", None),
        (
            "graph",
            Some(IndexConfig {
                kind: Some(index_config::Kind::Hnsw(HnswIndex {
                    m: 16,
                    ef_construction: 100,
                    ef_search: 64,
                })),
            }),
        ),
    ] {
        let mut r = create(name, dim as u32, Metric::Cosine);
        r.index = index;
        c.create_collection(r).await.unwrap();
        upsert(
            &mut c,
            name,
            items.chunks(500).map(|c| c.to_vec()).collect(),
        )
        .await
        .unwrap();
    }
    let mut found = 0;
    let queries: Vec<Vec<f32>> = (0..50)
        .map(|i| centres[i % 40].iter().map(|x| x + 0.2 * rand()).collect())
        .collect();
    for q in &queries {
        let exact = ids(&mut c, by_vector("exact", q, 10)).await;
        let graph = ids(&mut c, by_vector("graph", q, 10)).await;
        found += graph.iter().filter(|id| exact.contains(id)).count();
    }
    let recall = found as f64 / 500.0;
    assert!(recall >= 0.95, "HNSW recall@10 {recall}");

    // Deletes are honoured; a filter still yields k results.
    let top = ids(&mut c, by_vector("graph", &queries[0], 1))
        .await
        .remove(0);
    c.delete(DeleteRequest {
        collection: "graph".into(),
        ids: vec![top.clone()],
    })
    .await
    .unwrap();
    assert!(!ids(&mut c, by_vector("graph", &queries[0], 10))
        .await
        .contains(&top));
    let mut filtered = by_vector("graph", &queries[0], 10);
    filtered.filter = Some(cond(
        "cluster",
        Test::Equals(Value {
            kind: Some(Kind::IntValue(3)),
        }),
    ));
    assert_eq!(ids(&mut c, filtered).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_collections_embed_with_their_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::minilm(&["--data-dir", dir.path().to_str().unwrap()]);
    let (mut c, _) = clients(&server).await;
    let mut bad = create("films", 128, Metric::Cosine);
    bad.model = "minilm".into();
    let e = c.create_collection(bad).await.unwrap_err();
    assert!(
        e.message().contains("returns 384-dimensional vectors"),
        "{}",
        e.message()
    );
    let mut r = create("films", 384, Metric::Cosine);
    r.model = "minilm".into();
    c.create_collection(r).await.unwrap();
    let texts = [
        ("heat", "Heat (1995). A group of professional bank robbers is tracked by a detective in Los Angeles."),
        ("nemo", "Finding Nemo (2003). A clownfish searches the ocean for his lost son."),
        ("alien", "Alien (1979). The crew of a spaceship is hunted by a deadly creature."),
    ];
    let items = texts
        .iter()
        .map(|(id, t)| Item {
            id: id.to_string(),
            content: Some(item::Content::Text(t.to_string())),
            payload: HashMap::new(),
        })
        .collect();
    upsert(&mut c, "films", vec![items]).await.unwrap();
    let search = |t: &str| SearchRequest {
        collection: "films".into(),
        query: Some(search_request::Query::Text(t.into())),
        k: 1,
        ..Default::default()
    };
    assert_eq!(
        ids(&mut c, search("movie where a fish looks for his kid")).await,
        ["nemo"]
    );
    assert_eq!(
        ids(&mut c, search("thieves rob banks and a cop chases them")).await,
        ["heat"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_devices_resolve_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = vector_server(dir.path());
    let (mut client, _) = clients(&server).await;
    let gpu_host = std::path::Path::new("/dev/nvidia0").exists();

    let mut bad = create("bad", 4, Metric::Cosine);
    bad.device = "tpu:0".into();
    let err = client.create_collection(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("auto, cpu, cuda:N"),
        "{}",
        err.message()
    );

    if !gpu_host {
        // An explicit GPU that is not there is refused, with the reason, and nothing is
        // left behind; `auto` resolves to the CPU and says so.
        let mut cuda = create("on-gpu", 4, Metric::Cosine);
        cuda.device = "cuda:0".into();
        let err = client.create_collection(cuda).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("cuda:0 is not usable"),
            "{}",
            err.message()
        );
        assert!(!dir.path().join("collections/on-gpu").exists());
        let mut auto = create("auto", 4, Metric::Cosine);
        auto.device = "auto".into();
        let info = client.create_collection(auto).await.unwrap().into_inner();
        assert_eq!(info.device, "cpu");
        upsert(
            &mut client,
            "auto",
            vec![vec![
                item("a", &[1.0, 0.0, 0.0, 0.0], &[]),
                item("b", &[0.0, 1.0, 0.0, 0.0], &[]),
            ]],
        )
        .await
        .unwrap();
        let found = ids(&mut client, by_vector("auto", &[0.1, 1.0, 0.0, 0.0], 2)).await;
        assert_eq!(found, ["b", "a"]);
    }
}
