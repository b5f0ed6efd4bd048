//! TrainingService.FineTune and `marquee finetune` against a real server serving
//! all-MiniLM-L6-v2: a short run on a small text collection produces a
//! sentence-transformers directory under `data/finetuned/`, served under its new name
//! with the embeddings the trainer's own forward pass gives; it is served again after a
//! restart; cancelling or killing the server mid-run leaves nothing served or on disk
//! but the base model, and the job can be rerun; bad requests get precise statuses.

mod common;

use common::Server;
use marquee_client::proto::training_service_client::TrainingServiceClient;
use marquee_client::proto::{
    eval_query, fine_tune_event, item, CreateCollectionRequest, EvalQuery, FineTuneEvent,
    FineTuneRequest, Item, UpsertRequest,
};
use marquee_training::{embed_texts, BatchTokenizer, Device, SentenceEncoder};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tonic::{Code, Status, Streaming};

/// Twelve films as short plots, and a paraphrased query for each (the first eight
/// train, the last four validate).
const FILMS: [(&str, &str, &str); 12] = [
    (
        "jaws",
        "A great white shark terrorises a seaside resort town.",
        "movie where a big fish eats swimmers at the beach",
    ),
    (
        "alien",
        "The crew of a space freighter is hunted by a deadly creature.",
        "monster loose on a spaceship kills the crew one by one",
    ),
    (
        "up",
        "An old man ties balloons to his house and flies to South America.",
        "old guy flies his house with balloons",
    ),
    (
        "heat",
        "A detective hunts a crew of professional bank robbers in Los Angeles.",
        "cop chases bank robbers in LA",
    ),
    (
        "big",
        "A boy wakes up in the body of an adult after making a wish.",
        "kid wishes to be grown up and becomes an adult overnight",
    ),
    (
        "speed",
        "A bomb on a city bus will explode if it slows below fifty miles an hour.",
        "bus with a bomb that cannot slow down",
    ),
    (
        "cars",
        "A race car gets stranded in a small desert town on Route 66.",
        "animated racing car stuck in a tiny town",
    ),
    (
        "twister",
        "Storm chasers pursue tornadoes across Oklahoma.",
        "people chasing tornadoes in trucks",
    ),
    (
        "coco",
        "A boy who loves music enters the land of the dead.",
        "child musician visits the afterlife",
    ),
    (
        "rocky",
        "A small-time boxer gets a shot at the heavyweight title.",
        "underdog fighter gets a title match",
    ),
    (
        "titanic",
        "A love story aboard an ocean liner that strikes an iceberg.",
        "romance on a sinking ship",
    ),
    (
        "gravity",
        "Two astronauts are stranded after debris destroys their shuttle.",
        "astronauts lost in orbit after an accident",
    ),
];

fn query(id: &str, text: &str, relevant: &str) -> EvalQuery {
    EvalQuery {
        query_id: id.into(),
        query: Some(eval_query::Query::Text(text.into())),
        relevant: vec![relevant.into()],
    }
}

fn train_queries() -> Vec<EvalQuery> {
    FILMS[..8]
        .iter()
        .map(|(id, _, q)| query(id, q, id))
        .collect()
}

fn validation_queries() -> Vec<EvalQuery> {
    FILMS[8..]
        .iter()
        .map(|(id, _, q)| query(id, q, id))
        .collect()
}

/// Writes the queries as the JSONL the CLI reads.
fn write_jsonl(path: &Path, queries: &[EvalQuery]) {
    let lines: Vec<String> = queries
        .iter()
        .map(|q| {
            let Some(eval_query::Query::Text(text)) = &q.query else {
                unreachable!()
            };
            serde_json::json!({"query_id": q.query_id, "query": text, "relevant": q.relevant})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// Creates `films` (bound to minilm) with the twelve plots.
async fn films(server: &Server) {
    let mut retrieval = server.retrieval().await;
    retrieval
        .create_collection(CreateCollectionRequest {
            name: "films".into(),
            dimension: 384,
            model: "minilm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let items = FILMS
        .iter()
        .map(|(id, plot, _)| Item {
            id: (*id).into(),
            content: Some(item::Content::Text((*plot).into())),
            payload: Default::default(),
        })
        .collect();
    retrieval
        .upsert(tokio_stream::iter([UpsertRequest {
            collection: "films".into(),
            items,
        }]))
        .await
        .unwrap();
}

/// A small run's settings.
fn settings(output: &str, epochs: u32) -> FineTuneRequest {
    FineTuneRequest {
        collection: "films".into(),
        base_model: "minilm".into(),
        output_model: output.into(),
        epochs: Some(epochs),
        batch_size: Some(4),
        learning_rate: Some(5e-5),
        hard_negatives: 1,
        threads: 2,
        ..Default::default()
    }
}

async fn start_job(
    server: &Server,
    mut first: FineTuneRequest,
) -> Result<Streaming<FineTuneEvent>, Status> {
    let mut client = TrainingServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    first.train = train_queries();
    let rest = FineTuneRequest {
        validation: validation_queries(),
        ..Default::default()
    };
    Ok(client
        .fine_tune(tokio_stream::iter([first, rest]))
        .await?
        .into_inner())
}

/// Runs a job to its end: its status, or the result.
async fn finish(events: &mut Streaming<FineTuneEvent>) -> Result<fine_tune_event::Event, Status> {
    while let Some(event) = events.message().await? {
        if let Some(e @ fine_tune_event::Event::Result(_)) = event.event {
            return Ok(e);
        }
    }
    Err(Status::unknown("no result"))
}

async fn error_of(server: &Server, first: FineTuneRequest) -> Status {
    match start_job(server, first).await {
        Err(status) => status,
        Ok(mut events) => finish(&mut events).await.expect_err("the job should fail"),
    }
}

async fn embed(server: &Server, model: &str, texts: &[&str]) -> Vec<Vec<f32>> {
    server
        .client()
        .await
        .embed_texts(model, texts)
        .await
        .unwrap()
}

fn models(server: &Server) -> Vec<String> {
    let (ok, out, err) = server.cli(&["models", "--json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_cli_fine_tunes_serves_the_result_and_it_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap().to_string();
    let server = Server::minilm(&["--data-dir", &data_arg]);
    films(&server).await;
    let (train, validation) = (
        data.path().join("train.jsonl"),
        data.path().join("val.jsonl"),
    );
    write_jsonl(&train, &train_queries());
    write_jsonl(&validation, &validation_queries());
    let (ok, out, err) = server.cli(&[
        "--json",
        "finetune",
        "films",
        "--base",
        "minilm",
        "--as",
        "tuned",
        "--queries",
        train.to_str().unwrap(),
        "--validation",
        validation.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "5e-5",
        "--hard-negatives",
        "1",
        "--projection-dim",
        "64",
        "--threads",
        "2",
    ]);
    assert!(ok, "finetune failed: {err}\n{}", server.log.lock().unwrap());
    let result: Value = serde_json::from_str(&out).unwrap();
    println!("{result:#}");
    assert_eq!(result["model"], "tuned");
    assert_eq!(result["dimension"], 64);
    assert_eq!(result["steps"], 4, "2 epochs of ceil(8 / 4) steps");
    assert!(matches!(result["best_epoch"].as_u64(), Some(1 | 2)));
    for when in ["before", "after"] {
        let mrr = result[when]["mrr"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mrr) && mrr > 0.0, "{when} MRR {mrr}");
    }
    assert!(result["examples_per_second"].as_f64().unwrap() > 0.0);
    let dir = data.path().join("finetuned/tuned");
    assert_eq!(Path::new(result["path"].as_str().unwrap()), dir);
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "marquee_finetune.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("marquee_finetune.json")).unwrap())
            .unwrap();
    assert_eq!(
        (record["base_model"].as_str(), record["collection"].as_str()),
        (Some("minilm"), Some("films"))
    );

    // The served model (the plugin's forward pass) equals the trainer's on the saved weights.
    let texts = ["a shark at the beach", "astronauts in trouble"];
    let served = embed(&server, "tuned", &texts).await;
    let encoder = SentenceEncoder::load(&dir, &Device::Cpu).unwrap();
    let tokenizer = BatchTokenizer::load(&dir, 512).unwrap();
    let (trained, dim) = embed_texts(&encoder, &tokenizer, &texts, 8, &Device::Cpu).unwrap();
    assert_eq!(dim, 64);
    for (i, row) in served.iter().enumerate() {
        let cos = common::cosine(row, &trained[i * dim..(i + 1) * dim]);
        assert!(cos > 0.99999, "text {i}: cosine {cos}");
    }
    // The base model is unchanged.
    let base = embed(&server, "minilm", &texts[..1]).await;
    assert_eq!(base[0].len(), 384);

    // A second job under the same name is refused before it trains.
    let status = error_of(&server, settings("tuned", 1)).await;
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    drop(server);
    std::fs::create_dir_all(data.path().join("finetuned/.half.partial")).unwrap();
    let server = Server::minilm(&["--data-dir", &data_arg]);
    assert_eq!(models(&server), ["minilm", "tuned"]);
    assert_eq!(embed(&server, "tuned", &texts).await, served);
    assert!(!data.path().join("finetuned/.half.partial").exists());
}

#[tokio::test]
async fn cancelling_or_killing_a_job_leaves_only_the_base_model_and_it_can_be_rerun() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap().to_string();
    let mut server = Server::minilm(&["--data-dir", &data_arg]);
    films(&server).await;
    let staged = data.path().join("finetuned/.long.partial");

    // Cancelled by the client after the first step.
    let mut events = start_job(&server, settings("long", 50)).await.unwrap();
    loop {
        let event = events
            .message()
            .await
            .unwrap()
            .expect("a step before the end");
        if matches!(event.event, Some(fine_tune_event::Event::Step(_))) {
            break;
        }
    }
    drop(events);
    assert!(
        common::eventually(|| server.log.lock().unwrap().contains("FineTune") || !staged.exists())
            .await
    );
    // The job stops at its next step and serves nothing; the base model may be trained again.
    let mut rerun = None;
    for _ in 0..100 {
        match start_job(&server, settings("long", 50)).await {
            Err(status) if status.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                rerun = Some(other.unwrap());
                break;
            }
        }
    }
    let mut rerun = rerun.expect("the cancelled job released the base model");
    assert_eq!(models(&server), ["minilm"]);

    // A second job on the same base model while one runs.
    let status = error_of(&server, settings("other", 1)).await;
    assert_eq!(status.code(), Code::Aborted, "{status:?}");

    // SIGKILL mid-run.
    loop {
        let event = rerun.message().await.unwrap().expect("a step");
        if matches!(event.event, Some(fine_tune_event::Event::Step(_))) {
            break;
        }
    }
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10)).expect("killed");
    let server = Server::minilm(&["--data-dir", &data_arg]);
    assert_eq!(models(&server), ["minilm"]);
    assert!(
        !staged.exists(),
        "the killed job's files are removed at start-up"
    );
    // Rerun to its end.
    let mut events = start_job(&server, settings("long", 1)).await.unwrap();
    let fine_tune_event::Event::Result(result) = finish(&mut events).await.unwrap() else {
        unreachable!()
    };
    assert_eq!(
        (result.model.as_str(), result.steps, result.dimension),
        ("long", 2, 384)
    );
    assert_eq!(models(&server), ["long", "minilm"]);
}

#[tokio::test]
async fn bad_requests_get_precise_statuses() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::minilm(&["--data-dir", data.path().to_str().unwrap()]);
    films(&server).await;
    let cases: Vec<(FineTuneRequest, Code, &str)> = vec![
        (
            FineTuneRequest {
                base_model: "nope".into(),
                ..settings("x", 1)
            },
            Code::NotFound,
            "nope",
        ),
        (
            FineTuneRequest {
                collection: "nope".into(),
                ..settings("x", 1)
            },
            Code::NotFound,
            "nope",
        ),
        (settings("minilm", 1), Code::AlreadyExists, "already served"),
        (settings("../up", 1), Code::InvalidArgument, "output_model"),
        (
            FineTuneRequest {
                schedule: "warp".into(),
                ..settings("x", 1)
            },
            Code::InvalidArgument,
            "schedule",
        ),
        (
            FineTuneRequest {
                learning_rate: Some(-1.0),
                ..settings("x", 1)
            },
            Code::InvalidArgument,
            "learning_rate",
        ),
        (
            FineTuneRequest {
                epochs: Some(0),
                ..settings("x", 1)
            },
            Code::InvalidArgument,
            "epochs",
        ),
        (
            FineTuneRequest {
                hard_negatives: 12,
                ..settings("x", 1)
            },
            Code::InvalidArgument,
            "hard negatives",
        ),
    ];
    for (request, code, needle) in cases {
        let status = error_of(&server, request).await;
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(needle),
            "{status:?} lacks {needle:?}"
        );
    }
    // A relevant item the collection does not hold.
    let mut client = TrainingServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let mut first = settings("x", 1);
    first.train = vec![query("q", "a film", "missing-film")];
    let mut events = client
        .fine_tune(tokio_stream::iter([first]))
        .await
        .unwrap()
        .into_inner();
    let status = finish(&mut events).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("missing-film"), "{status:?}");
    // Patience needs validation queries.
    let mut first = FineTuneRequest {
        patience: 1,
        ..settings("x", 2)
    };
    first.train = train_queries();
    let mut events = client
        .fine_tune(tokio_stream::iter([first]))
        .await
        .unwrap()
        .into_inner();
    let status = finish(&mut events).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(models(&server), ["minilm"]);
    assert!(!data.path().join("finetuned/x").exists());
}
