//! Collections keep the texts of their text items, and ReembedCollection re-embeds them
//! with another text encoder into a new version: here with all-MiniLM-L6-v2 served
//! under two names (384 dimensions) and the C echo encoder (3 dimensions), on a real
//! server. Searches and writes go on during a re-embedding (paused with the
//! `fault-injection` hooks), and a SIGKILL before or after the switch leaves one whole
//! version.

mod common;

use common::Server;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{
    item, search_request, value::Kind, CollectionInfo, CreateCollectionRequest, DeleteRequest,
    GetCollectionRequest, GetRequest, Item, Rating, RecordRatingsRequest, ReembedCollectionRequest,
    ReembedCollectionResponse, SearchRequest, StoredItem, UpsertRequest, Value, Vector,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Retrieval = RetrievalServiceClient<Channel>;

/// A data directory, a plugin directory (the BERT plugin and the echo plugin compiled
/// from tests/c_plugins) and a configuration serving `minilm`, `minilm2` (the same
/// model under another name) and `echo`.
struct Setup {
    root: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let plugins = root.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let lib = |stem: &str| {
            format!(
                "{}{stem}{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            )
        };
        let bert = lib("marquee_bert_text");
        std::fs::copy(common::plugin_dir().join(&bert), plugins.join(&bert)).unwrap();
        let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-std=c11", "-shared", "-fPIC", "-Wall", "-Werror", "-I"])
            .arg(common::repo_root().join("plugins/api/include"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c_plugins/echo.c"))
            .arg("-o")
            .arg(plugins.join(lib("c_echo")))
            .status()
            .expect("running the C compiler");
        assert!(status.success(), "compiling echo.c");
        let echo = root.path().join("echo-model");
        std::fs::create_dir_all(&echo).unwrap();
        let config = root.path().join("marquee.toml");
        std::fs::write(
            &config,
            format!(
                r#"plugin_dir = "{plugins}"
plugins = ["marquee_bert_text", "c_echo"]
data_dir = "{data}"
default_model = "minilm"

[models.minilm]
path = "{minilm}"

[models.minilm2]
path = "{minilm}"

[models.echo]
path = "{echo}"
plugin = "c-echo"
"#,
                plugins = plugins.display(),
                data = root.path().join("data").display(),
                minilm = common::minilm_dir().display(),
                echo = echo.display(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("faults")).unwrap();
        Setup { root, config }
    }

    /// Starts a server (the pause hooks read `faults/`).
    fn start(&self) -> Server {
        let faults = self.faults();
        Server::start_with_env(
            &["--config", self.config.to_str().unwrap()],
            &[("MARQUEE_FAULT_DIR", faults.to_str().unwrap())],
        )
    }

    fn faults(&self) -> PathBuf {
        self.root.path().join("faults")
    }

    /// Makes re-embeddings wait at `point` until [`Setup::release`].
    fn arm(&self, point: &str) {
        std::fs::write(self.faults().join(point), "").unwrap();
    }

    fn release(&self, point: &str) {
        std::fs::remove_file(self.faults().join(point)).unwrap();
    }

    /// The entries of the collections directory.
    fn collection_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.path().join("data/collections"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn text_item(id: &str, text: &str, shelf: &str) -> Item {
    Item {
        id: id.into(),
        content: Some(item::Content::Text(text.into())),
        payload: [(
            "shelf".to_string(),
            Value {
                kind: Some(Kind::StringValue(shelf.into())),
            },
        )]
        .into(),
    }
}

/// Text of item `i`.
fn text(i: usize) -> String {
    format!(
        "document {i} about {}",
        ["cats", "ships", "bread", "stars"][i % 4]
    )
}

async fn create(client: &mut Retrieval, name: &str, model: &str, dimension: u32) {
    client
        .create_collection(CreateCollectionRequest {
            name: name.into(),
            dimension,
            model: model.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn upsert(client: &mut Retrieval, name: &str, items: Vec<Item>) -> Result<u64, Status> {
    let request = UpsertRequest {
        collection: name.into(),
        items,
    };
    Ok(client
        .upsert(tokio_stream::iter([request]))
        .await?
        .into_inner()
        .upserted)
}

async fn get(client: &mut Retrieval, name: &str, ids: &[String]) -> Vec<StoredItem> {
    let got = client
        .get(GetRequest {
            collection: name.into(),
            ids: ids.to_vec(),
            with_vectors: true,
            with_texts: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.missing.is_empty(), "missing {:?}", got.missing);
    got.items
}

async fn info(client: &mut Retrieval, name: &str) -> CollectionInfo {
    client
        .get_collection(GetCollectionRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn search_text(client: &mut Retrieval, name: &str, query: &str) -> Vec<String> {
    client
        .search(SearchRequest {
            collection: name.into(),
            query: Some(search_request::Query::Text(query.into())),
            k: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

/// Starts a re-embedding; the stream of its progress.
async fn start_reembed(
    client: &mut Retrieval,
    name: &str,
    model: &str,
) -> Result<tonic::Streaming<ReembedCollectionResponse>, Status> {
    Ok(client
        .reembed_collection(ReembedCollectionRequest {
            name: name.into(),
            model: model.into(),
        })
        .await?
        .into_inner())
}

/// Every message of a re-embedding, or its error.
async fn finish(
    mut stream: tonic::Streaming<ReembedCollectionResponse>,
) -> Result<Vec<ReembedCollectionResponse>, Status> {
    let mut all = Vec::new();
    while let Some(message) = stream.message().await? {
        all.push(message);
    }
    Ok(all)
}

async fn reembed(
    client: &mut Retrieval,
    name: &str,
    model: &str,
) -> Result<Vec<ReembedCollectionResponse>, Status> {
    finish(start_reembed(client, name, model).await?).await
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Checks that every item's vector is `model`'s embedding of its stored text.
async fn assert_embedded_with(server: &Server, items: &[StoredItem], model: &str) {
    let mut client = server.client().await;
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    let expected = client.embed_texts(model, &texts).await.unwrap();
    for (item, want) in items.iter().zip(expected) {
        let diff = common::max_abs_diff(&item.vector, &normalised(&want));
        assert!(diff < 1e-5, "item {} differs by {diff}", item.id);
        assert_eq!(item.vector.len(), want.len());
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("d{i:03}")).collect()
}

/// A `minilm` collection `docs` with 40 text items on two shelves, and ratings.
async fn docs(client: &mut Retrieval) {
    create(client, "docs", "minilm", 384).await;
    let items = (0..40)
        .map(|i| text_item(&format!("d{i:03}"), &text(i), ["a", "b"][i % 2]))
        .collect();
    assert_eq!(upsert(client, "docs", items).await.unwrap(), 40);
    rate(client, "u1", "d001").await;
}

async fn rate(client: &mut Retrieval, user: &str, item: &str) {
    let request = RecordRatingsRequest {
        collection: "docs".into(),
        user_id: user.into(),
        ratings: vec![Rating {
            item_id: item.into(),
            rating: 5.0,
            timestamp: 1,
        }],
    };
    client
        .record_ratings(tokio_stream::iter([request]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn texts_are_kept_through_restart_and_compaction() {
    let setup = Setup::new();
    let all = ids(0..1100);
    {
        let server = setup.start();
        let mut client = server.retrieval().await;
        create(&mut client, "docs", "minilm", 384).await;
        let mut items: Vec<Item> = (0..1100)
            .map(|i| text_item(&all[i], &text(i), "a"))
            .collect();
        items[5].content = Some(item::Content::Vector(Vector {
            values: vec![0.5; 384],
        }));
        upsert(&mut client, "docs", items).await.unwrap();
        let got = get(&mut client, "docs", &all[..8]).await;
        assert_eq!(got[3].text, text(3));
        assert_eq!(got[5].text, "", "an item upserted as a vector has no text");
        // Texts only when asked for.
        let plain = client
            .get(GetRequest {
                collection: "docs".into(),
                ids: all[..2].to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(plain.items.iter().all(|i| i.text.is_empty()));
    }
    let server = setup.start();
    let mut client = server.retrieval().await;
    assert_eq!(get(&mut client, "docs", &all[3..4]).await[0].text, text(3));
    // Deleting 1030 of 1100 rows compacts the collection into a snapshot.
    client
        .delete(DeleteRequest {
            collection: "docs".into(),
            ids: all[..1030].to_vec(),
        })
        .await
        .unwrap();
    let snapshots = || {
        std::fs::read_dir(setup.root.path().join("data/collections/docs"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snapshot-")
            })
            .count()
    };
    assert_eq!(snapshots(), 1);
    drop(client);
    drop(server);
    let server = setup.start();
    let mut client = server.retrieval().await;
    let kept = get(&mut client, "docs", &all[1030..]).await;
    for (item, i) in kept.iter().zip(1030..) {
        assert_eq!(item.text, text(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reembedding_switches_models_and_dimensions() {
    let setup = Setup::new();
    let all = ids(0..40);
    {
        let server = setup.start();
        let mut client = server.retrieval().await;
        docs(&mut client).await;
        let before = get(&mut client, "docs", &all).await;
        let messages = reembed(&mut client, "docs", "echo").await.unwrap();
        let last = messages.last().unwrap();
        assert_eq!((last.done, last.total), (40, 40));
        assert!(messages[..messages.len() - 1]
            .iter()
            .all(|m| m.collection.is_none() && m.total == 40));
        let new = last.collection.clone().unwrap();
        assert_eq!(
            (new.model.as_str(), new.dimension, new.items, new.ratings),
            ("echo", 3, 40, 1)
        );
        let after = get(&mut client, "docs", &all).await;
        assert_embedded_with(&server, &after, "echo").await;
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((&b.id, &b.text, &b.payload), (&a.id, &a.text, &a.payload));
        }
        // Queries are embedded with the new model.
        assert_eq!(search_text(&mut client, "docs", "x").await.len(), 3);
        assert_eq!(
            setup.collection_dirs(),
            ["docs"],
            "the old version is removed"
        );
    }
    // The new version is what restarts; the CLI re-embeds back with 384 dimensions.
    let server = setup.start();
    let mut client = server.retrieval().await;
    assert_eq!(info(&mut client, "docs").await.dimension, 3);
    let (ok, stdout, stderr) =
        server.cli(&["collections", "reembed", "docs", "--model", "minilm2"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("re-embedded"), "{stdout}");
    let info = info(&mut client, "docs").await;
    assert_eq!(
        (info.model.as_str(), info.dimension, info.users),
        ("minilm2", 384, 1)
    );
    let items = get(&mut client, "docs", &all).await;
    assert_embedded_with(&server, &items, "minilm2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_name_what_is_wrong() {
    let setup = Setup::new();
    let server = setup.start();
    let mut client = server.retrieval().await;
    docs(&mut client).await;
    let e = reembed(&mut client, "docs", "nope").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("\"nope\""), "{}", e.message());
    let e = reembed(&mut client, "docs", "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = reembed(&mut client, "absent", "echo").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Items upserted as vectors cannot be re-embedded.
    let vectors = (0..2)
        .map(|i| Item {
            id: format!("v{i}"),
            content: Some(item::Content::Vector(Vector {
                values: vec![1.0; 384],
            })),
            payload: HashMap::new(),
        })
        .collect();
    upsert(&mut client, "docs", vectors).await.unwrap();
    let e = reembed(&mut client, "docs", "echo").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("2 items of collection docs have no stored text")
            && e.message().contains("\"v0\""),
        "{}",
        e.message()
    );
    let info = info(&mut client, "docs").await;
    assert_eq!((info.model.as_str(), info.items), ("minilm", 42));
    assert_eq!(setup.collection_dirs(), ["docs"]);
}

/// Waits for the server to log that a re-embedding paused at `point`.
fn wait_paused(server: &Server, point: &str) {
    assert!(
        server.wait_for_log(&format!("paused at {point}")),
        "no pause at {point}:\n{}",
        server.log.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_and_writes_go_on_during_reembedding() {
    if !cfg!(feature = "fault-injection") {
        eprintln!("skipped: needs the fault-injection feature");
        return;
    }
    let setup = Setup::new();
    let server = setup.start();
    let mut client = server.retrieval().await;
    docs(&mut client).await;
    setup.arm("reembed-built");
    let job = tokio::spawn(finish(
        start_reembed(&mut client, "docs", "echo").await.unwrap(),
    ));
    wait_paused(&server, "reembed-built");
    // The old version answers; a second re-embedding is refused.
    assert_eq!(search_text(&mut client, "docs", "ships").await.len(), 3);
    assert_eq!(info(&mut client, "docs").await.dimension, 384);
    let e = reembed(&mut client, "docs", "minilm2").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("already being re-embedded"),
        "{}",
        e.message()
    );
    // Writes: new items, an overwrite, a delete, ratings.
    let new = vec![
        text_item("n1", "a new item about whales", "c"),
        text_item("d002", "an overwritten text", "c"),
    ];
    assert_eq!(upsert(&mut client, "docs", new).await.unwrap(), 2);
    client
        .delete(DeleteRequest {
            collection: "docs".into(),
            ids: vec!["d003".into()],
        })
        .await
        .unwrap();
    rate(&mut client, "u2", "n1").await;
    setup.release("reembed-built");
    let messages = job.await.unwrap().unwrap();
    let last = messages.last().unwrap();
    assert_eq!((last.done, last.total), (42, 42));
    let info = last.collection.clone().unwrap();
    assert_eq!(
        (info.dimension, info.items, info.users, info.ratings),
        (3, 40, 2, 2)
    );
    let wanted: Vec<String> = ["n1", "d002", "d000"].map(String::from).to_vec();
    let items = get(&mut client, "docs", &wanted).await;
    assert_eq!(items[0].text, "a new item about whales");
    assert_eq!(items[1].text, "an overwritten text");
    assert_eq!(
        items[1].payload["shelf"].kind,
        Some(Kind::StringValue("c".into()))
    );
    assert_embedded_with(&server, &items, "echo").await;
    let gone = client
        .get(GetRequest {
            collection: "docs".into(),
            ids: vec!["d003".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.missing, ["d003"]);
    // Writes go to the new version now.
    let later = vec![text_item("n2", "after the switch", "c")];
    assert_eq!(upsert(&mut client, "docs", later).await.unwrap(), 1);
    assert_eq!(
        get(&mut client, "docs", &["n2".into()]).await[0]
            .vector
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_leaves_the_whole_old_or_the_whole_new_version() {
    if !cfg!(feature = "fault-injection") {
        eprintln!("skipped: needs the fault-injection feature");
        return;
    }
    let setup = Setup::new();
    let all = ids(0..40);
    let before = {
        let mut server = setup.start();
        let mut client = server.retrieval().await;
        docs(&mut client).await;
        let before = get(&mut client, "docs", &all).await;
        setup.arm("reembed-built");
        let job = tokio::spawn(finish(
            start_reembed(&mut client, "docs", "echo").await.unwrap(),
        ));
        wait_paused(&server, "reembed-built");
        assert_eq!(setup.collection_dirs(), [".reembed-docs", "docs"]);
        server.signal("KILL");
        server.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(job.await.unwrap().is_err());
        setup.release("reembed-built");
        before
    };
    // Killed before the switch: the old version, whole; the staging directory is gone.
    {
        let mut server = setup.start();
        let mut client = server.retrieval().await;
        assert_eq!(setup.collection_dirs(), ["docs"]);
        assert_eq!(get(&mut client, "docs", &all).await, before);
        assert_eq!(info(&mut client, "docs").await.ratings, 1);
        // Killed right after the exchange: the new version.
        setup.arm("reembed-exchanged");
        let job = tokio::spawn(finish(
            start_reembed(&mut client, "docs", "echo").await.unwrap(),
        ));
        wait_paused(&server, "reembed-exchanged");
        server.signal("KILL");
        server.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(job.await.unwrap().is_err());
        setup.release("reembed-exchanged");
    }
    let server = setup.start();
    let mut client = server.retrieval().await;
    assert_eq!(setup.collection_dirs(), ["docs"]);
    let info = info(&mut client, "docs").await;
    assert_eq!(
        (
            info.model.as_str(),
            info.dimension,
            info.items,
            info.ratings
        ),
        ("echo", 3, 40, 1)
    );
    let after = get(&mut client, "docs", &all).await;
    assert_embedded_with(&server, &after, "echo").await;
    // The job can be run again.
    reembed(&mut client, "docs", "minilm2").await.unwrap();
    let again = get(&mut client, "docs", &all).await;
    for (b, a) in before.iter().zip(&again) {
        assert_eq!((&b.id, &b.text, &b.payload), (&a.id, &a.text, &a.payload));
        assert!(common::max_abs_diff(&b.vector, &a.vector) < 1e-5);
    }
}
