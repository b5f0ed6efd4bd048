//! The retrieval, ratings and evaluation commands of the `marquee` CLI, one module each,
//! plus the pure helpers they share (templates, filters, payload values, input files).
//!
//! Every command checks its arguments and reads its input files before connecting, so
//! mistakes show up without a server.

pub mod collections;
pub mod eval;
mod eval_generation;
pub mod filter;
pub mod finetune;
pub mod ingest;
pub mod progress;
pub mod ratings;
pub mod records;
pub mod search;
pub use marquee_client::template;
pub mod value;

use anyhow::Result;
use clap::Subcommand;
use marquee_client::{Client, ConnectOptions};

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
    /// Fine-tune a served encoder on a query set against a collection, and serve the
    /// result under a new name.
    Finetune(finetune::FinetuneArgs),
}

/// Runs `command` against `server`; `as_json` selects JSON output.
pub async fn run(command: Command, server: &ConnectOptions, as_json: bool) -> Result<()> {
    match command {
        Command::Collections { action } => collections::run(server, action, as_json).await,
        Command::Ingest(args) => ingest::run(server, args, as_json).await,
        Command::Ratings { action } => ratings::run(server, action, as_json).await,
        Command::Search(args) => search::search(server, args, as_json).await,
        Command::Recommend(args) => search::recommend(server, args, as_json).await,
        Command::Eval { action } => eval::run(server, action, as_json).await,
        Command::Finetune(args) => finetune::run(server, args, as_json).await,
    }
}

/// Connects to `server`.
pub async fn connect(server: &ConnectOptions) -> Result<Client> {
    Client::connect_with(server).await
}
