//! `marquee collections`: create, list, show, delete, repair and re-embed collections.

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use marquee_client::proto::{
    index_config::Kind as IndexKind, CollectionInfo, CreateCollectionRequest,
    DeleteCollectionRequest, ExactIndex, GetCollectionRequest, HnswIndex, IndexConfig,
    ListCollectionsRequest, Metric, ReembedCollectionRequest, RepairCollectionRequest,
    RepairCollectionResponse, UnopenedCollection,
};
use marquee_client::ConnectOptions;
use serde_json::json;

/// `marquee collections` subcommands.
#[derive(Subcommand, Debug)]
pub enum CollectionsAction {
    /// Create a collection.
    Create(CreateArgs),
    /// List collections.
    List,
    /// Show one collection.
    Get {
        /// Collection name.
        name: String,
    },
    /// Delete a collection and everything in it.
    Delete {
        /// Collection name.
        name: String,
    },
    /// Report what keeping a damaged collection's readable history would drop (admin);
    /// with --yes, cut its files back to that history and open it.
    Repair {
        /// Collection name.
        name: String,
        /// Make the changes (without it, only report them).
        #[arg(long)]
        yes: bool,
    },
    /// Re-embed a collection's items from their stored texts with another text encoder
    /// (admin), e.g. a fine-tuned one, into a new version that replaces the current one
    /// once complete; searches and writes go on meanwhile.
    Reembed {
        /// Collection name.
        name: String,
        /// The loaded text encoder to embed with (its dimension becomes the
        /// collection's).
        #[arg(long)]
        model: String,
    },
}

/// Similarity metric on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricArg {
    /// Cosine similarity (vectors are L2-normalised on the way in).
    Cosine,
    /// Raw inner product.
    Ip,
    /// Euclidean distance (score: negated squared distance).
    L2,
}

/// Index kind on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexArg {
    /// Score every item.
    Exact,
    /// Approximate search on an HNSW graph.
    Hnsw,
}

/// Arguments of `marquee collections create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Collection name (letters, digits, '-', '_', '.').
    pub name: String,
    /// Vector dimension.
    #[arg(long, value_name = "D")]
    pub dim: u32,
    /// Similarity metric.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
    /// Index kind.
    #[arg(long, value_enum, default_value_t = IndexArg::Exact)]
    pub index: IndexArg,
    /// HNSW links per node [default: 16].
    #[arg(long)]
    pub m: Option<u32>,
    /// HNSW candidate list size while building [default: 200].
    #[arg(long)]
    pub ef_construction: Option<u32>,
    /// HNSW candidate list size while searching [default: 64].
    #[arg(long)]
    pub ef_search: Option<u32>,
    /// Embedding model bound to the collection, so items and queries can be text.
    #[arg(long)]
    pub model: Option<String>,
    /// Device for exact search: auto, cpu or cuda:N [default: the server's retrieval.device].
    #[arg(long)]
    pub device: Option<String>,
}

impl CreateArgs {
    /// The `CreateCollection` request for these arguments.
    pub fn request(&self) -> Result<CreateCollectionRequest> {
        let metric = match self.metric {
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::Ip => Metric::InnerProduct,
            MetricArg::L2 => Metric::L2,
        };
        let hnsw_flags =
            self.m.is_some() || self.ef_construction.is_some() || self.ef_search.is_some();
        let kind = match self.index {
            IndexArg::Exact if hnsw_flags => {
                bail!("--m, --ef-construction and --ef-search need --index hnsw")
            }
            IndexArg::Exact => IndexKind::Exact(ExactIndex {}),
            IndexArg::Hnsw => IndexKind::Hnsw(HnswIndex {
                m: self.m.unwrap_or(16),
                ef_construction: self.ef_construction.unwrap_or(200),
                ef_search: self.ef_search.unwrap_or(64),
            }),
        };
        Ok(CreateCollectionRequest {
            name: self.name.clone(),
            dimension: self.dim,
            metric: metric as i32,
            index: Some(IndexConfig { kind: Some(kind) }),
            model: self.model.clone().unwrap_or_default(),
            device: self.device.clone().unwrap_or_default(),
        })
    }
}

/// A metric's command-line name.
pub fn metric_name(metric: i32) -> &'static str {
    match Metric::try_from(metric).unwrap_or(Metric::Unspecified) {
        Metric::Unspecified | Metric::Cosine => "cosine",
        Metric::InnerProduct => "ip",
        Metric::L2 => "l2",
    }
}

/// An index configuration as short text, e.g. `hnsw(m=16,ef_construction=200,ef_search=64)`.
pub fn index_text(index: Option<&IndexConfig>) -> String {
    match index.and_then(|i| i.kind.as_ref()) {
        None | Some(IndexKind::Exact(_)) => "exact".into(),
        Some(IndexKind::Hnsw(h)) => format!(
            "hnsw(m={},ef_construction={},ef_search={})",
            h.m, h.ef_construction, h.ef_search
        ),
    }
}

/// A collection as a JSON object.
pub fn collection_json(c: &CollectionInfo) -> serde_json::Value {
    let index = match c.index.as_ref().and_then(|i| i.kind.as_ref()) {
        None | Some(IndexKind::Exact(_)) => json!({ "type": "exact" }),
        Some(IndexKind::Hnsw(h)) => json!({
            "type": "hnsw",
            "m": h.m,
            "ef_construction": h.ef_construction,
            "ef_search": h.ef_search,
        }),
    };
    json!({
        "name": c.name,
        "dimension": c.dimension,
        "metric": metric_name(c.metric),
        "index": index,
        "model": c.model,
        "device": c.device,
        "items": c.items,
        "users": c.users,
        "ratings": c.ratings,
    })
}

/// Prints collections as a table, or as a JSON array with `as_json`; the collections
/// that could not be opened follow, each with why (`{"name", "unopened"}` in JSON).
fn print_table(collections: &[CollectionInfo], unopened: &[UnopenedCollection], as_json: bool) {
    if as_json {
        let closed = unopened
            .iter()
            .map(|u| json!({ "name": u.name, "unopened": u.reason }));
        let all: Vec<_> = collections
            .iter()
            .map(collection_json)
            .chain(closed)
            .collect();
        println!("{}", serde_json::Value::Array(all));
        return;
    }
    for u in unopened {
        println!("unopened {}: {}", u.name, u.reason);
    }
    if collections.is_empty() {
        if unopened.is_empty() {
            println!("no collections");
        }
        return;
    }
    println!(
        "{:<24} {:>6} {:<7} {:<10} {:<20} {:>10} {:>7} {:>10}",
        "NAME", "DIM", "METRIC", "INDEX", "MODEL", "ITEMS", "USERS", "RATINGS"
    );
    for c in collections {
        let index = match c.index.as_ref().and_then(|i| i.kind.as_ref()) {
            Some(IndexKind::Hnsw(h)) => format!("hnsw/m{}", h.m),
            _ => "exact".into(),
        };
        println!(
            "{:<24} {:>6} {:<7} {:<10} {:<20} {:>10} {:>7} {:>10}",
            c.name,
            c.dimension,
            metric_name(c.metric),
            index,
            if c.model.is_empty() { "-" } else { &c.model },
            c.items,
            c.users,
            c.ratings
        );
    }
}

/// Runs `marquee collections ...`.
pub async fn run(server: &ConnectOptions, action: CollectionsAction, as_json: bool) -> Result<()> {
    let create = match &action {
        CollectionsAction::Create(args) => Some(args.request()?),
        _ => None,
    };
    let mut client = super::connect(server).await?;
    match action {
        CollectionsAction::Create(_) => {
            let request = create.expect("built above");
            let info = client
                .retrieval
                .create_collection(request)
                .await?
                .into_inner();
            if as_json {
                println!("{}", collection_json(&info));
            } else {
                let model = if info.model.is_empty() {
                    String::new()
                } else {
                    format!(", model {}", info.model)
                };
                println!(
                    "created collection {} (dim {}, {}, {}{model})",
                    info.name,
                    info.dimension,
                    metric_name(info.metric),
                    index_text(info.index.as_ref()),
                );
            }
        }
        CollectionsAction::List => {
            let listing = client
                .retrieval
                .list_collections(ListCollectionsRequest {})
                .await?
                .into_inner();
            print_table(&listing.collections, &listing.unopened, as_json);
        }
        CollectionsAction::Get { name } => {
            let info = client
                .retrieval
                .get_collection(GetCollectionRequest { name })
                .await?
                .into_inner();
            if as_json {
                println!("{}", collection_json(&info));
            } else {
                print_table(std::slice::from_ref(&info), &[], false);
            }
        }
        CollectionsAction::Delete { name } => {
            client
                .retrieval
                .delete_collection(DeleteCollectionRequest { name: name.clone() })
                .await?;
            if as_json {
                println!("{}", json!({ "deleted": name }));
            } else {
                println!("deleted collection {name}");
            }
        }
        CollectionsAction::Repair { name, yes } => {
            let report = client
                .retrieval
                .repair_collection(RepairCollectionRequest {
                    name: name.clone(),
                    apply: yes,
                })
                .await?
                .into_inner();
            if as_json {
                println!("{}", repair_json(&name, &report));
            } else {
                print!("{}", repair_text(&name, &report));
            }
        }
        CollectionsAction::Reembed { name, model } => {
            let mut events = client
                .retrieval
                .reembed_collection(ReembedCollectionRequest {
                    name: name.clone(),
                    model: model.clone(),
                })
                .await?
                .into_inner();
            let bar = super::progress::bar(0, "items", as_json);
            let mut info = None;
            while let Some(event) = events.message().await? {
                bar.set_length(event.total);
                bar.set_position(event.done);
                info = event.collection.or(info);
            }
            bar.finish_and_clear();
            let Some(info) = info else {
                bail!("the server ended the re-embedding of {name} without its result");
            };
            if as_json {
                println!("{}", collection_json(&info));
            } else {
                println!(
                    "re-embedded collection {} with {}: {} items, dim {}",
                    info.name, info.model, info.items, info.dimension
                );
            }
        }
    }
    Ok(())
}

/// A repair report as JSON.
fn repair_json(name: &str, r: &RepairCollectionResponse) -> serde_json::Value {
    json!({
        "name": name,
        "damaged": r.damaged,
        "file": r.file,
        "offset": r.offset,
        "problem": r.problem,
        "records_dropped": r.records_dropped,
        "items_upserted_dropped": r.items_upserted_dropped,
        "ids_deleted_dropped": r.ids_deleted_dropped,
        "ratings_dropped": r.ratings_dropped,
        "bytes_dropped": r.bytes_dropped,
        "actions": r.actions,
        "applied": r.applied,
    })
}

/// A repair report in words: the damage, what keeping the history before it drops,
/// and the file changes made or to make.
fn repair_text(name: &str, r: &RepairCollectionResponse) -> String {
    if !r.damaged {
        return format!("collection {name} is intact and open; nothing to repair\n");
    }
    let mut text = format!(
        "collection {name} is damaged: {} at byte {}: {}\n\
         keeping its history before that point drops {} readable record(s) \
         ({} item(s) upserted, {} id(s) deleted, {} rating(s)) and {} byte(s)\n",
        r.file,
        r.offset,
        r.problem,
        r.records_dropped,
        r.items_upserted_dropped,
        r.ids_deleted_dropped,
        r.ratings_dropped,
        r.bytes_dropped,
    );
    let verb = if r.applied { "done" } else { "to do" };
    for action in &r.actions {
        text.push_str(&format!("  {verb}: {action}\n"));
    }
    text.push_str(&if r.applied {
        format!("repaired: collection {name} is open\n")
    } else {
        format!("nothing changed; run `marquee collections repair {name} --yes` to make these changes\n")
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(index: IndexArg, m: Option<u32>) -> CreateArgs {
        CreateArgs {
            name: "movies".into(),
            dim: 384,
            metric: MetricArg::Ip,
            index,
            m,
            ef_construction: None,
            ef_search: None,
            model: Some("all-MiniLM-L6-v2".into()),
            device: Some("cuda:1".into()),
        }
    }

    #[test]
    fn create_requests() {
        let r = args(IndexArg::Hnsw, Some(32)).request().unwrap();
        assert_eq!(r.metric, Metric::InnerProduct as i32);
        assert_eq!(
            r.index.unwrap().kind,
            Some(IndexKind::Hnsw(HnswIndex {
                m: 32,
                ef_construction: 200,
                ef_search: 64
            }))
        );
        let r = args(IndexArg::Exact, None).request().unwrap();
        assert_eq!(r.index.unwrap().kind, Some(IndexKind::Exact(ExactIndex {})));
        assert!(args(IndexArg::Exact, Some(8)).request().is_err());
        assert_eq!(
            args(IndexArg::Exact, None).request().unwrap().device,
            "cuda:1"
        );
    }

    #[test]
    fn repair_reports_say_what_is_dropped_and_what_to_run() {
        let report = RepairCollectionResponse {
            damaged: true,
            file: "/d/collections/c/wal-0000000002.log".into(),
            offset: 4096,
            problem: "a checksum mismatch".into(),
            records_dropped: 3,
            items_upserted_dropped: 20,
            ids_deleted_dropped: 1,
            ratings_dropped: 0,
            bytes_dropped: 9000,
            actions: vec!["cut wal-0000000002.log to 4096 bytes".into()],
            applied: false,
        };
        assert_eq!(
            repair_text("c", &report),
            "collection c is damaged: /d/collections/c/wal-0000000002.log at byte 4096: \
             a checksum mismatch\nkeeping its history before that point drops 3 readable \
             record(s) (20 item(s) upserted, 1 id(s) deleted, 0 rating(s)) and 9000 byte(s)\n  \
             to do: cut wal-0000000002.log to 4096 bytes\nnothing changed; run \
             `marquee collections repair c --yes` to make these changes\n"
        );
        let applied = RepairCollectionResponse {
            applied: true,
            ..report
        };
        assert!(repair_text("c", &applied).ends_with(
            "  done: cut wal-0000000002.log to 4096 bytes\nrepaired: collection c is open\n"
        ));
        assert_eq!(
            repair_text("c", &RepairCollectionResponse::default()),
            "collection c is intact and open; nothing to repair\n"
        );
        assert_eq!(repair_json("c", &applied)["bytes_dropped"], 9000);
    }

    #[test]
    fn collection_as_json() {
        let info = CollectionInfo {
            name: "movies".into(),
            dimension: 384,
            metric: Metric::Cosine as i32,
            index: None,
            model: String::new(),
            items: 7290,
            users: 0,
            ratings: 0,
            device: "cpu".into(),
        };
        let j = collection_json(&info);
        assert_eq!(j["device"], "cpu");
        assert_eq!(j["metric"], "cosine");
        assert_eq!(j["index"]["type"], "exact");
        assert_eq!(j["items"], 7290);
    }
}
