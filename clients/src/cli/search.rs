//! `marquee search` and `marquee recommend`, and how their hits are printed.

use super::{filter, value};
use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use marquee_client::proto::{
    recommend_request::User, search_request::Query, RecommendRequest, ScoredItem, SearchRequest,
    Vector,
};
use marquee_client::ConnectOptions;
use serde_json::json;

/// Arguments of `marquee search`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("query").required(true).args(["text", "vector", "item"])))]
pub struct SearchArgs {
    /// Collection name.
    pub collection: String,
    /// Query text (embedded with the collection's model).
    pub text: Option<String>,
    /// Number of hits.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
    /// Payload condition, repeatable, all must hold: field=value, 'field contains value',
    /// field>=N, field>N, field<=N, field<N.
    #[arg(long = "filter", value_name = "EXPR")]
    pub filters: Vec<String>,
    /// Query vector as a JSON array, e.g. '[0.1, -0.2, ...]'.
    #[arg(long, value_name = "JSON")]
    pub vector: Option<String>,
    /// Query with a stored item (itself excluded from the hits).
    #[arg(long, value_name = "ID")]
    pub item: Option<String>,
    /// Return each hit's payload.
    #[arg(long)]
    pub with_payload: bool,
}

impl SearchArgs {
    /// The `Search` request for these arguments.
    pub fn request(&self) -> Result<SearchRequest> {
        let query = match (&self.text, &self.vector, &self.item) {
            (Some(text), None, None) => Query::Text(text.clone()),
            (None, Some(vector), None) => {
                let parsed: serde_json::Value =
                    serde_json::from_str(vector).context("--vector: invalid JSON")?;
                Query::Vector(Vector {
                    values: value::vector(Some(&parsed)).context("--vector")?,
                })
            }
            (None, None, Some(id)) => Query::ItemId(id.clone()),
            _ => anyhow::bail!("give exactly one of TEXT, --vector and --item"),
        };
        Ok(SearchRequest {
            collection: self.collection.clone(),
            query: Some(query),
            k: self.k,
            filter: filter::parse_all(&self.filters)?,
            with_payload: self.with_payload,
        })
    }
}

/// Arguments of `marquee recommend`.
#[derive(Args, Debug)]
pub struct RecommendArgs {
    /// Collection name.
    pub collection: String,
    /// User whose recorded ratings make the profile.
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// Number of recommendations.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
    /// Ratings at or above this make the user's profile.
    #[arg(long, default_value = "4.0")]
    pub min_rating: f32,
    /// Also recommend items the user has already rated.
    #[arg(long)]
    pub include_seen: bool,
    /// Payload condition, repeatable, all must hold (as for search).
    #[arg(long = "filter", value_name = "EXPR")]
    pub filters: Vec<String>,
    /// Return each hit's payload.
    #[arg(long)]
    pub with_payload: bool,
}

impl RecommendArgs {
    /// The `Recommend` request for these arguments.
    pub fn request(&self) -> Result<RecommendRequest> {
        Ok(RecommendRequest {
            collection: self.collection.clone(),
            user: Some(User::UserId(self.user.clone())),
            min_rating: Some(self.min_rating),
            exclude_seen: Some(!self.include_seen),
            k: self.k,
            filter: filter::parse_all(&self.filters)?,
            with_payload: self.with_payload,
        })
    }
}

/// Hits as JSON: `[{"id", "score", "payload"}, ...]`.
pub fn hits_json(hits: &[ScoredItem]) -> serde_json::Value {
    hits.iter()
        .map(|h| {
            json!({
                "id": h.id,
                "score": shortest_f64(h.score),
                "payload": value::payload_to_json(&h.payload),
            })
        })
        .collect()
}

/// The `f64` with the f32's shortest decimal form (0.1f32 → 0.1, not 0.10000000149011612).
fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// One human-readable line per hit: `rank  score  id  [title (year)]`.
pub fn hit_line(rank: usize, hit: &ScoredItem) -> String {
    let title = hit.payload.get("title").map(value::to_text);
    let year = hit.payload.get("year").map(value::to_text);
    let label = match (title, year) {
        (Some(t), Some(y)) => format!("  {t} ({y})"),
        (Some(t), None) => format!("  {t}"),
        (None, Some(y)) => format!("  ({y})"),
        (None, None) => String::new(),
    };
    format!("{rank:>3}  {:>8.4}  {}{label}", hit.score, hit.id)
}

/// Prints hits as lines, or as JSON with `as_json`.
pub fn print_hits(hits: &[ScoredItem], as_json: bool) {
    if as_json {
        println!("{}", hits_json(hits));
    } else if hits.is_empty() {
        eprintln!("no hits");
    } else {
        for (i, hit) in hits.iter().enumerate() {
            println!("{}", hit_line(i + 1, hit));
        }
    }
}

/// Runs `marquee search`.
pub async fn search(server: &ConnectOptions, args: SearchArgs, as_json: bool) -> Result<()> {
    let request = args.request()?;
    let mut client = super::connect(server).await?;
    let hits = client.retrieval.search(request).await?.into_inner().hits;
    print_hits(&hits, as_json);
    Ok(())
}

/// Runs `marquee recommend`.
pub async fn recommend(server: &ConnectOptions, args: RecommendArgs, as_json: bool) -> Result<()> {
    let request = args.request()?;
    let mut client = super::connect(server).await?;
    let hits = client.retrieval.recommend(request).await?.into_inner().hits;
    print_hits(&hits, as_json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_client::proto::{value::Kind, Value};

    fn search_args(text: Option<&str>, vector: Option<&str>, item: Option<&str>) -> SearchArgs {
        SearchArgs {
            collection: "movies".into(),
            text: text.map(String::from),
            k: 5,
            filters: vec!["year>=1990".into()],
            vector: vector.map(String::from),
            item: item.map(String::from),
            with_payload: true,
        }
    }

    #[test]
    fn search_requests() {
        let r = search_args(Some("heist"), None, None).request().unwrap();
        assert_eq!(r.query, Some(Query::Text("heist".into())));
        assert_eq!(r.filter.unwrap().must.len(), 1);
        let r = search_args(None, Some("[1, 0.5]"), None).request().unwrap();
        assert_eq!(
            r.query,
            Some(Query::Vector(Vector {
                values: vec![1.0, 0.5]
            }))
        );
        let r = search_args(None, None, Some("tt1")).request().unwrap();
        assert_eq!(r.query, Some(Query::ItemId("tt1".into())));
        assert!(search_args(None, Some("[1, x]"), None).request().is_err());
        assert!(search_args(Some("a"), None, Some("tt1")).request().is_err());
    }

    #[test]
    fn recommend_request_defaults() {
        let args = RecommendArgs {
            collection: "movies".into(),
            user: "42".into(),
            k: 10,
            min_rating: 4.0,
            include_seen: false,
            filters: vec![],
            with_payload: false,
        };
        let r = args.request().unwrap();
        assert_eq!(r.user, Some(User::UserId("42".into())));
        assert_eq!(r.exclude_seen, Some(true));
        assert_eq!(r.min_rating, Some(4.0));
        assert!(r.filter.is_none());
    }

    #[test]
    fn hit_output() {
        let mut hit = ScoredItem {
            id: "tt0113277".into(),
            score: 0.61234,
            payload: Default::default(),
        };
        assert_eq!(hit_line(1, &hit), "  1    0.6123  tt0113277");
        let s = |s: &str| Value {
            kind: Some(Kind::StringValue(s.into())),
        };
        hit.payload.insert("title".into(), s("Heat"));
        hit.payload.insert(
            "year".into(),
            Value {
                kind: Some(Kind::IntValue(1995)),
            },
        );
        assert_eq!(hit_line(12, &hit), " 12    0.6123  tt0113277  Heat (1995)");
        let j = hits_json(std::slice::from_ref(&hit));
        assert_eq!(j[0]["id"], "tt0113277");
        assert_eq!(j[0]["payload"]["year"], 1995);
        assert_eq!(j[0]["score"].to_string(), "0.61234");
    }
}
