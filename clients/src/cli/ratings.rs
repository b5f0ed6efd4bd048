//! `marquee ratings import`: streams a ratings CSV to `RecordRatings`, grouped by user.

use super::progress;
use super::records;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use marquee_client::proto::{Rating, RecordRatingsRequest};
use marquee_client::ConnectOptions;
use serde_json::json;
use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;

/// Most ratings in one `RecordRatings` message.
pub const MAX_RATINGS_PER_MESSAGE: usize = 1000;

/// `marquee ratings` subcommands.
#[derive(Subcommand, Debug)]
pub enum RatingsAction {
    /// Import a ratings CSV into a collection's per-user histories.
    Import(ImportArgs),
}

/// Arguments of `marquee ratings import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Collection name.
    pub collection: String,
    /// CSV (optionally .gz) with header user_id,item_id,rating[,timestamp]; the item column
    /// may be named imdb_id.
    pub file: PathBuf,
}

/// One CSV row.
#[derive(Debug, Clone, PartialEq)]
pub struct RatingRow {
    /// The rating user.
    pub user_id: String,
    /// The rating.
    pub rating: Rating,
}

/// Reads ratings CSV rows; errors name the line.
pub fn read_ratings(reader: impl Read) -> Result<Vec<RatingRow>> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers: Vec<String> = csv
        .headers()
        .context("reading the CSV header")?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let (Some(user_col), Some(item_col), Some(rating_col)) = (
        column(&["user_id"]),
        column(&["item_id", "imdb_id"]),
        column(&["rating"]),
    ) else {
        bail!(
            "the CSV header must name user_id, item_id (or imdb_id) and rating, \
             and optionally timestamp; found {}",
            headers.join(",")
        );
    };
    let timestamp_col = column(&["timestamp"]);
    let mut rows = Vec::new();
    for row in csv.records() {
        let row = row.context("invalid CSV")?;
        let line = row.position().map_or(0, |p| p.line());
        let cell = |col: usize, name: &str| -> Result<&str> {
            match row.get(col).map(str::trim) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => bail!("line {line}: missing {name}"),
            }
        };
        let user_id = cell(user_col, "user_id")?.to_string();
        let item_id = cell(item_col, &headers[item_col])?.to_string();
        let rating_text = cell(rating_col, "rating")?;
        let rating = rating_text
            .parse::<f32>()
            .ok()
            .filter(|r| r.is_finite())
            .with_context(|| format!("line {line}: rating {rating_text:?} is not a number"))?;
        let timestamp = match timestamp_col.and_then(|c| row.get(c)).map(str::trim) {
            None | Some("") => 0,
            Some(t) => t
                .parse::<i64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().map(|f| f as i64))
                .with_context(|| format!("line {line}: timestamp {t:?} is not a number"))?,
        };
        rows.push(RatingRow {
            user_id,
            rating: Rating {
                item_id,
                rating,
                timestamp,
            },
        });
    }
    Ok(rows)
}

/// Groups rows into messages: one per run of consecutive rows of the same user, split
/// into at most `max` ratings each. Every message names the collection.
pub fn group(collection: &str, rows: Vec<RatingRow>, max: usize) -> Vec<RecordRatingsRequest> {
    let mut messages: Vec<RecordRatingsRequest> = Vec::new();
    for row in rows {
        match messages.last_mut() {
            Some(last) if last.user_id == row.user_id && last.ratings.len() < max.max(1) => {
                last.ratings.push(row.rating)
            }
            _ => messages.push(RecordRatingsRequest {
                collection: collection.to_string(),
                user_id: row.user_id,
                ratings: vec![row.rating],
            }),
        }
    }
    messages
}

/// Runs `marquee ratings ...`.
pub async fn run(server: &ConnectOptions, action: RatingsAction, as_json: bool) -> Result<()> {
    let RatingsAction::Import(args) = action;
    let rows = read_ratings(records::open(&args.file)?)
        .with_context(|| format!("reading {}", args.file.display()))?;
    if rows.is_empty() {
        bail!("{}: no ratings", args.file.display());
    }
    let users = rows
        .iter()
        .map(|r| r.user_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let total = rows.len() as u64;
    let messages = group(&args.collection, rows, MAX_RATINGS_PER_MESSAGE);
    let mut client = super::connect(server).await?;
    let bar = progress::bar(total, "ratings", as_json);
    let stream = progress::Sent::new(
        messages,
        bar.clone(),
        |m: &RecordRatingsRequest| m.ratings.len() as u64,
        format!("{total} ratings sent; waiting for the server to store them"),
    );
    let response = client.retrieval.record_ratings(stream).await;
    bar.finish_and_clear();
    let recorded = response?.into_inner().recorded;
    if as_json {
        println!("{}", json!({ "ratings": recorded, "users": users }));
    } else {
        println!("imported {recorded} ratings for {users} users");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_imdb_or_item_columns() {
        let rows =
            read_ratings("user_id,imdb_id,rating,timestamp\n1,tt1,4.5,964982703\n".as_bytes())
                .unwrap();
        assert_eq!(
            rows,
            [RatingRow {
                user_id: "1".into(),
                rating: Rating {
                    item_id: "tt1".into(),
                    rating: 4.5,
                    timestamp: 964982703
                }
            }]
        );
        let rows = read_ratings("user_id,item_id,rating\nu,i,3\n".as_bytes()).unwrap();
        assert_eq!(rows[0].rating.item_id, "i");
        assert_eq!(rows[0].rating.timestamp, 0);
    }

    #[test]
    fn bad_rows_name_the_line() {
        assert!(read_ratings("user,item,score\n1,2,3\n".as_bytes()).is_err());
        let err =
            read_ratings("user_id,item_id,rating\n1,a,4\n1,b,great\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = read_ratings("user_id,item_id,rating\n1,,4\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn groups_consecutive_runs_per_user() {
        let text = "user_id,item_id,rating\n1,a,4\n1,b,5\n2,c,3\n1,d,2\n1,e,1\n1,f,1\n";
        let messages = group("movies", read_ratings(text.as_bytes()).unwrap(), 2);
        let shape: Vec<(&str, Vec<&str>)> = messages
            .iter()
            .map(|m| {
                (
                    m.user_id.as_str(),
                    m.ratings.iter().map(|r| r.item_id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("1", vec!["a", "b"]),
                ("2", vec!["c"]),
                ("1", vec!["d", "e"]),
                ("1", vec!["f"]),
            ]
        );
        assert!(messages.iter().all(|m| m.collection == "movies"));
    }

    #[test]
    fn at_most_max_per_message() {
        let rows: Vec<RatingRow> = (0..2500)
            .map(|i| RatingRow {
                user_id: "u".into(),
                rating: Rating {
                    item_id: i.to_string(),
                    rating: 4.0,
                    timestamp: 0,
                },
            })
            .collect();
        let sizes: Vec<usize> = group("c", rows, MAX_RATINGS_PER_MESSAGE)
            .iter()
            .map(|m| m.ratings.len())
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }
}
