//! Damaged collection files against a real server: a record whose checksum fails before
//! the end of a log segment, a damaged or truncated snapshot, a missing segment. The
//! collection stays closed (its RPCs answer DATA_LOSS naming the file and byte, and so
//! does the log) while the others serve; `marquee collections repair` says what keeping
//! the readable history would drop and, with `--yes`, keeps exactly that. A torn tail
//! after the last acknowledged record is still cut silently.

mod common;

use common::Server;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{
    item, search_request, CreateCollectionRequest, DeleteRequest, GetCollectionRequest, GetRequest,
    Item, ListCollectionsRequest, Metric, Rating, RecordRatingsRequest, SearchRequest,
    UpsertRequest, Vector,
};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use tonic::Code;

const DIM: usize = 8;

async fn create(client: &mut RetrievalServiceClient<Channel>, name: &str) {
    client
        .create_collection(CreateCollectionRequest {
            name: name.into(),
            dimension: DIM as u32,
            metric: Metric::Cosine as i32,
            ..Default::default()
        })
        .await
        .unwrap();
}

fn item(n: usize) -> Item {
    Item {
        id: format!("i{n:05}"),
        content: Some(item::Content::Vector(Vector {
            values: (0..DIM)
                .map(|j| ((n * 7 + j * 3) % 11) as f32 + 1.0)
                .collect(),
        })),
        ..Default::default()
    }
}

/// One Upsert call with one message of items `range`: one log record.
async fn upsert(
    client: &mut RetrievalServiceClient<Channel>,
    name: &str,
    range: std::ops::Range<usize>,
) -> Result<(), tonic::Status> {
    let request = UpsertRequest {
        collection: name.into(),
        items: range.map(item).collect(),
    };
    client
        .upsert(tokio_stream::iter([request]))
        .await
        .map(|_| ())
}

async fn rate(client: &mut RetrievalServiceClient<Channel>, name: &str, ratings: usize) {
    let request = RecordRatingsRequest {
        collection: name.into(),
        user_id: "u1".into(),
        ratings: (0..ratings)
            .map(|n| Rating {
                item_id: format!("i{n:05}"),
                rating: 4.0,
                timestamp: n as i64,
            })
            .collect(),
    };
    client
        .record_ratings(tokio_stream::iter([request]))
        .await
        .unwrap();
}

async fn items(client: &mut RetrievalServiceClient<Channel>, name: &str) -> u64 {
    client
        .get_collection(GetCollectionRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .items
}

async fn found(client: &mut RetrievalServiceClient<Channel>, name: &str, n: usize) -> bool {
    let response = client
        .get(GetRequest {
            collection: name.into(),
            ids: vec![format!("i{n:05}")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    !response.items.is_empty()
}

/// Where each frame of a log or snapshot file starts (`[len u32][crc u32][payload]`).
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        starts.push(at);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    starts
}

fn segment(collection: &Path, n: u64) -> PathBuf {
    collection.join(format!("wal-{n:010}.log"))
}

fn snapshot(collection: &Path, n: u64) -> PathBuf {
    collection.join(format!("snapshot-{n:010}.bin"))
}

/// Every RPC naming `name` answers DATA_LOSS with `needle` in its message.
async fn assert_data_loss(client: &mut RetrievalServiceClient<Channel>, name: &str, needle: &str) {
    let check = |what: &str, status: tonic::Status| {
        assert_eq!(status.code(), Code::DataLoss, "{what}: {status:?}");
        assert!(status.message().contains(needle), "{what}: {status:?}");
        assert!(
            status
                .message()
                .contains(&format!("`marquee collections repair {name}`")),
            "{status:?}"
        );
    };
    let info = client
        .get_collection(GetCollectionRequest { name: name.into() })
        .await;
    check("GetCollection", info.unwrap_err());
    check("Upsert", upsert(client, name, 0..1).await.unwrap_err());
    let search = client
        .search(SearchRequest {
            collection: name.into(),
            query: Some(search_request::Query::Vector(Vector {
                values: vec![1.0; DIM],
            })),
            k: 3,
            ..Default::default()
        })
        .await;
    check("Search", search.unwrap_err());
    let delete = client
        .delete(DeleteRequest {
            collection: name.into(),
            ids: vec!["i00000".into()],
        })
        .await;
    check("Delete", delete.unwrap_err());
    let again = client
        .create_collection(CreateCollectionRequest {
            name: name.into(),
            dimension: DIM as u32,
            ..Default::default()
        })
        .await;
    check("CreateCollection", again.unwrap_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_mid_log_closes_only_its_collection_until_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hurt = data.join("collections/hurt");
    {
        let server = Server::storage(&data);
        let mut client = server.retrieval().await;
        create(&mut client, "hurt").await;
        create(&mut client, "fine").await;
        for batch in 0..5 {
            upsert(&mut client, "hurt", batch * 10..batch * 10 + 10)
                .await
                .unwrap();
        }
        rate(&mut client, "hurt", 4).await;
        upsert(&mut client, "fine", 0..30).await.unwrap();
    }
    // Flip a byte inside the third record's payload: five valid records and a bad one
    // between them, which no crash can leave.
    let log = segment(&hurt, 1);
    let mut bytes = std::fs::read(&log).unwrap();
    let starts = frame_starts(&bytes);
    assert_eq!(starts.len(), 6, "five upserts and one ratings record");
    let bad = starts[2];
    bytes[bad + 8 + 5] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();

    let server = Server::storage(&data);
    let mut client = server.retrieval().await;
    let said = format!("{} is damaged at byte {bad}", log.display());
    assert_data_loss(&mut client, "hurt", &said).await;
    assert!(server.wait_for_log(&said), "{}", server.log.lock().unwrap());
    // Every other collection serves.
    assert_eq!(items(&mut client, "fine").await, 30);
    upsert(&mut client, "fine", 30..31).await.unwrap();
    let listing = client
        .list_collections(ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let open: Vec<_> = listing
        .collections
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(open, ["fine"]);
    assert_eq!(listing.unopened.len(), 1);
    assert_eq!(listing.unopened[0].name, "hurt");
    assert!(listing.unopened[0].reason.contains(&said));

    // The report: what is dropped, what would change; nothing changes without --yes.
    let (ok, out, err) = server.cli(&["collections", "repair", "hurt"]);
    assert!(ok, "{err}");
    let dropped = bytes.len() - bad;
    assert!(
        out.contains(&format!(
            "keeping its history before that point drops 3 readable record(s) \
             (20 item(s) upserted, 0 id(s) deleted, 4 rating(s)) and {dropped} byte(s)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "to do: cut wal-0000000001.log to {bad} bytes\nnothing changed"
        )),
        "{out}"
    );
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
    assert_data_loss(&mut client, "hurt", &said).await;
    let (ok, out, _) = server.cli(&["--json", "collections", "repair", "hurt"]);
    assert!(ok);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["offset"], bad as u64);
    assert_eq!(report["records_dropped"], 3);
    assert_eq!(report["applied"], false);

    // Confirmed: the two records before the damage are kept, the collection opens.
    let (ok, out, err) = server.cli(&["collections", "repair", "hurt", "--yes"]);
    assert!(ok, "{err}");
    assert!(out.contains("repaired: collection hurt is open"), "{out}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), bad as u64);
    assert_eq!(items(&mut client, "hurt").await, 20);
    assert!(found(&mut client, "hurt", 19).await);
    assert!(!found(&mut client, "hurt", 20).await);
    upsert(&mut client, "hurt", 100..105).await.unwrap();
    let (ok, out, _) = server.cli(&["collections", "repair", "hurt"]);
    assert!(ok);
    assert_eq!(
        out,
        "collection hurt is intact and open; nothing to repair\n"
    );
    drop(server);

    let server = Server::storage(&data);
    let mut client = server.retrieval().await;
    assert_eq!(items(&mut client, "hurt").await, 25);
    assert_eq!(items(&mut client, "fine").await, 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_still_cut_silently() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let server = Server::storage(&data);
        let mut client = server.retrieval().await;
        create(&mut client, "c").await;
        upsert(&mut client, "c", 0..10).await.unwrap();
        upsert(&mut client, "c", 10..20).await.unwrap();
    }
    // Half of a third frame: what a crash during an append leaves.
    let log = segment(&data.join("collections/c"), 1);
    let mut bytes = std::fs::read(&log).unwrap();
    let whole = bytes.len();
    let second = frame_starts(&bytes)[1];
    let torn = bytes[second..second + (whole - second) / 2].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&log, &bytes).unwrap();

    let server = Server::storage(&data);
    let mut client = server.retrieval().await;
    assert_eq!(items(&mut client, "c").await, 20);
    assert!(server.wait_for_log("cutting the torn tail"));
    assert_eq!(std::fs::metadata(&log).unwrap().len(), whole as u64);
    upsert(&mut client, "c", 20..25).await.unwrap();
    drop(server);
    let server = Server::storage(&data);
    assert_eq!(items(&mut server.retrieval().await, "c").await, 25);
}

/// A collection whose tombstones compacted into `snapshot-1` (items 1100..1200 live)
/// followed by segment 2 holding one upsert (items 5000..5010).
async fn compacted(data: &Path) {
    let server = Server::storage(data);
    let mut client = server.retrieval().await;
    create(&mut client, "snap").await;
    create(&mut client, "fine").await;
    upsert(&mut client, "fine", 0..3).await.unwrap();
    upsert(&mut client, "snap", 0..1200).await.unwrap();
    client
        .delete(DeleteRequest {
            collection: "snap".into(),
            ids: (0..1100).map(|n| format!("i{n:05}")).collect(),
        })
        .await
        .unwrap();
    upsert(&mut client, "snap", 5000..5010).await.unwrap();
    assert_eq!(items(&mut client, "snap").await, 110);
    let collection = data.join("collections/snap");
    assert!(snapshot(&collection, 1).exists(), "the deletes compacted");
    assert!(!segment(&collection, 1).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_truncated_or_headless_snapshots_and_missing_segments_are_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    compacted(&data).await;
    let collection = data.join("collections/snap");
    let (snap, seg2) = (snapshot(&collection, 1), segment(&collection, 2));
    let pristine = (std::fs::read(&snap).unwrap(), std::fs::read(&seg2).unwrap());
    let restore = || {
        std::fs::write(&snap, &pristine.0).unwrap();
        std::fs::write(&seg2, &pristine.1).unwrap();
    };
    let starts = frame_starts(&pristine.0);
    assert!(starts.len() >= 2, "a header and the items");
    let items_at = starts[1];

    // Each case: the damage, the message naming file and byte, the items a repair keeps.
    type Damage = Box<dyn Fn()>;
    let (s, g) = (snap.clone(), seg2.clone());
    let cases: Vec<(&str, Damage, String, u64)> = vec![
        (
            "truncated snapshot",
            Box::new({
                let s = s.clone();
                move || {
                    let file = std::fs::OpenOptions::new().write(true).open(&s).unwrap();
                    file.set_len(items_at as u64 + 20).unwrap();
                }
            }),
            format!("{} is damaged at byte {items_at}", snap.display()),
            // The header alone: the snapshot's items are gone, segment 2's dropped.
            0,
        ),
        (
            "flipped byte in the snapshot's items",
            Box::new({
                let s = s.clone();
                move || {
                    let mut b = std::fs::read(&s).unwrap();
                    b[items_at + 8 + 40] ^= 1;
                    std::fs::write(&s, b).unwrap();
                }
            }),
            format!("{} is damaged at byte {items_at}", snap.display()),
            0,
        ),
        (
            "snapshot header",
            Box::new({
                let s = s.clone();
                move || {
                    let mut b = std::fs::read(&s).unwrap();
                    b[9] ^= 1;
                    std::fs::write(&s, b).unwrap();
                }
            }),
            format!(
                "{} is damaged at byte 0: the snapshot has no valid header",
                snap.display()
            ),
            0,
        ),
        (
            "missing segment",
            Box::new(move || std::fs::remove_file(&g).unwrap()),
            format!(
                "{} is damaged at byte 0: the log segment is missing",
                seg2.display()
            ),
            // The snapshot is whole: its 100 items stay, segment 2's 10 are gone.
            100,
        ),
    ];
    for (case, damage, said, kept) in cases {
        restore();
        damage();
        let server = Server::storage(&data);
        let mut client = server.retrieval().await;
        assert_data_loss(&mut client, "snap", &said).await;
        assert!(server.wait_for_log(&said), "{case}");
        assert_eq!(items(&mut client, "fine").await, 3, "{case}");
        let (ok, out, err) = server.cli(&["collections", "repair", "snap", "--yes"]);
        assert!(ok, "{case}: {err}");
        assert!(out.contains("repaired"), "{case}: {out}");
        assert_eq!(items(&mut client, "snap").await, kept, "{case}");
        upsert(&mut client, "snap", 7000..7001).await.unwrap();
        drop(server);
        let server = Server::storage(&data);
        let mut client = server.retrieval().await;
        assert_eq!(items(&mut client, "snap").await, kept + 1, "{case}");
        drop(server);
        // Back to the compacted files for the next case.
        for stale in std::fs::read_dir(&collection).unwrap() {
            let path = stale.unwrap().path();
            if path.extension().is_some_and(|e| e == "log" || e == "bin") {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_names_starting_with_a_dot_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::storage(&dir.path().join("data"));
    let mut client = server.retrieval().await;
    for name in [".", "..", ".hidden", ".deleted-x-1"] {
        let status = client
            .create_collection(CreateCollectionRequest {
                name: name.into(),
                dimension: 4,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    }
    create(&mut client, "a.b").await;
}
