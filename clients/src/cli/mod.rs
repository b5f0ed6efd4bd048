//! The retrieval, ratings and evaluation commands of the `marquee` CLI, one module each,
//! plus the pure helpers they share (templates, filters, payload values, input files).
//!
//! Every command checks its arguments and reads its input files before connecting, so
//! mistakes show up without a server.

pub mod collections;
pub mod eval;
pub mod filter;
pub mod ingest;
pub mod progress;
pub mod ratings;
pub mod records;
pub mod search;
pub mod template;
pub mod value;

use anyhow::{Context, Result};
use clap::Subcommand;
use marquee_client::Client;

/// The retrieval-side subcommands of `marquee`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, show and delete collections.
    Collections {
        #[command(subcommand)]
        action: collections::CollectionsAction,
    },
    /// Upsert the records of a JSONL, JSONL.gz or CSV file into a collection.
    Ingest(ingest::IngestArgs),
    /// Import per-user ratings into a collection.
    Ratings {
        #[command(subcommand)]
        action: ratings::RatingsAction,
    },
    /// Search a collection with a text, a vector (--vector) or a stored item (--item).
    Search(search::SearchArgs),
    /// Recommend items to a user from the ratings recorded for them.
    Recommend(search::RecommendArgs),
    /// Evaluate retrieval or recommendation quality on the server.
    Eval {
        #[command(subcommand)]
        action: eval::EvalAction,
    },
}

/// Runs `command` against the server at `addr`; `as_json` selects JSON output.
pub async fn run(command: Command, addr: &str, as_json: bool) -> Result<()> {
    match command {
        Command::Collections { action } => collections::run(addr, action, as_json).await,
        Command::Ingest(args) => ingest::run(addr, args, as_json).await,
        Command::Ratings { action } => ratings::run(addr, action, as_json).await,
        Command::Search(args) => search::search(addr, args, as_json).await,
        Command::Recommend(args) => search::recommend(addr, args, as_json).await,
        Command::Eval { action } => eval::run(addr, action, as_json).await,
    }
}

/// Connects to the server at `addr`.
pub async fn connect(addr: &str) -> Result<Client> {
    Client::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))
}
