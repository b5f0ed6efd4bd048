//! A disk that fills and an fsync that fails, against a real server: the write is
//! answered RESOURCE_EXHAUSTED (no space) or UNAVAILABLE and never acknowledged, the
//! collection then takes no writes until restart (no retry-then-ack) while it still
//! answers reads, and after a restart with the disk healthy again writes resume and
//! every acknowledged write is there.
//!
//! The full disk is a real one: a 4 MiB tmpfs the test mounts (as root, as in CI). Where
//! mounting is not allowed it falls back to the storage layer's failure injection
//! (feature `fault-injection`, which the test suite's build turns on), and so does the
//! failed fsync, which no small filesystem produces on demand.

mod common;

use common::Server;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{
    item, search_request, value::Kind, CreateCollectionRequest, GetCollectionRequest, GetRequest,
    Item, Metric, SearchRequest, UpsertRequest, Value, Vector,
};
use std::path::Path;
use std::process::Command;
use tonic::transport::Channel;
use tonic::Code;

const DIM: usize = 16;

fn start(data: &Path, faults: Option<&Path>) -> Server {
    match faults {
        Some(dir) => {
            Server::storage_with_env(data, &[("MARQUEE_FAULT_DIR", dir.to_str().unwrap())])
        }
        None => Server::storage(data),
    }
}

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

/// Items `range`, each with a 2 KiB payload so a few hundred fill the disk.
fn items(range: std::ops::Range<usize>) -> Vec<Item> {
    range
        .map(|n| Item {
            id: format!("i{n:06}"),
            content: Some(item::Content::Vector(Vector {
                values: (0..DIM).map(|j| ((n + j * 5) % 13) as f32 + 0.5).collect(),
            })),
            payload: [(
                "text".to_string(),
                Value {
                    kind: Some(Kind::StringValue(format!("{n:>2048}"))),
                },
            )]
            .into(),
        })
        .collect()
}

async fn upsert(
    client: &mut RetrievalServiceClient<Channel>,
    name: &str,
    range: std::ops::Range<usize>,
) -> Result<(), tonic::Status> {
    let request = UpsertRequest {
        collection: name.into(),
        items: items(range),
    };
    client
        .upsert(tokio_stream::iter([request]))
        .await
        .map(|_| ())
}

async fn count(client: &mut RetrievalServiceClient<Channel>, name: &str) -> u64 {
    client
        .get_collection(GetCollectionRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// Every id in `acked` is stored.
async fn assert_all_there(client: &mut RetrievalServiceClient<Channel>, name: &str, acked: usize) {
    let response = client
        .get(GetRequest {
            collection: name.into(),
            ids: (0..acked).map(|n| format!("i{n:06}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.missing.is_empty(), "lost {:?}", response.missing);
    assert_eq!(response.items.len(), acked);
}

/// Reads still work on a collection that takes no writes.
async fn assert_reads(client: &mut RetrievalServiceClient<Channel>, name: &str, acked: usize) {
    assert_eq!(count(client, name).await, acked as u64);
    let hits = client
        .search(SearchRequest {
            collection: name.into(),
            query: Some(search_request::Query::Vector(Vector {
                values: vec![1.0; DIM],
            })),
            k: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 5.min(acked));
}

/// A tmpfs of `size` mounted at `at`, unmounted on drop; `None` where mounting is not
/// allowed.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_unacknowledged_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "4m");
    let faults = dir.path().join("faults");
    std::fs::create_dir_all(&faults).unwrap();
    let data = dir.path().join("disk/data");
    std::fs::create_dir_all(&data).unwrap();
    // Room to free once the disk is full.
    let ballast = dir.path().join("disk/ballast");
    std::fs::write(&ballast, vec![1u8; 1 << 20]).unwrap();
    if disk.is_none() {
        if !cfg!(feature = "fault-injection") {
            eprintln!("skipped: no tmpfs can be mounted here and fault injection is off");
            return;
        }
        eprintln!("cannot mount a tmpfs here (not root?): injecting ENOSPC instead");
    }

    let mut acked = 0;
    {
        let server = start(&data, Some(&faults));
        let mut client = server.retrieval().await;
        create(&mut client, "c").await;
        let refused = loop {
            if disk.is_none() && acked == 400 {
                std::fs::write(faults.join("wal-write"), "ENOSPC").unwrap();
            }
            match upsert(&mut client, "c", acked..acked + 20).await {
                Ok(()) => acked += 20,
                Err(status) => break status,
            }
            assert!(acked < 10_000, "a 4 MiB disk never filled");
        };
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains("No space left on device"),
            "{refused:?}"
        );
        assert!(acked >= 400, "only {acked} items fit");
        // Read-only until restart, even once space is back: the log's tail is unknown.
        std::fs::remove_file(&ballast).unwrap();
        let _ = std::fs::remove_file(faults.join("wal-write"));
        let again = upsert(&mut client, "c", acked..acked + 1)
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::Unavailable, "{again:?}");
        assert!(again.message().contains("restart"), "{again:?}");
        assert_reads(&mut client, "c", acked).await;
    }
    let server = start(&data, None);
    let mut client = server.retrieval().await;
    assert_all_there(&mut client, "c", acked).await;
    assert_eq!(count(&mut client, "c").await, acked as u64);
    upsert(&mut client, "c", acked..acked + 20).await.unwrap();
    drop(server);
    let server = start(&data, None);
    assert_eq!(
        count(&mut server.retrieval().await, "c").await,
        acked as u64 + 20
    );
    drop(server);
    drop(disk);
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_acknowledged_nor_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (data, faults) = (dir.path().join("data"), dir.path().join("faults"));
    std::fs::create_dir_all(&faults).unwrap();
    {
        let server = start(&data, Some(&faults));
        let mut client = server.retrieval().await;
        create(&mut client, "c").await;
        create(&mut client, "other").await;
        upsert(&mut client, "c", 0..50).await.unwrap();
        std::fs::write(faults.join("wal-sync"), "EIO").unwrap();
        let failed = upsert(&mut client, "c", 50..60).await.unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
        assert!(
            failed.message().contains("syncing the log failed"),
            "{failed:?}"
        );
        // The disk recovers; the collection still takes nothing until restart.
        std::fs::remove_file(faults.join("wal-sync")).unwrap();
        let later = upsert(&mut client, "c", 60..61).await.unwrap_err();
        assert_eq!(later.code(), Code::Unavailable, "{later:?}");
        assert!(later.message().contains("restart the server"), "{later:?}");
        assert_reads(&mut client, "c", 50).await;
        // Other collections' logs did not fail.
        upsert(&mut client, "other", 0..5).await.unwrap();
    }
    let server = start(&data, None);
    let mut client = server.retrieval().await;
    // Every acknowledged item is there. The unacknowledged batch's fate is unknown, as
    // after any failed write (its bytes reached the page cache; the disk may hold them).
    assert_all_there(&mut client, "c", 50).await;
    assert_eq!(count(&mut client, "other").await, 5);
    let before = count(&mut client, "c").await;
    assert!(before == 50 || before == 60, "{before}");
    upsert(&mut client, "c", 100..110).await.unwrap();
    assert_eq!(count(&mut client, "c").await, before + 10);
}
