//! Ranking metrics with trec_eval's definitions (binary relevance).
//!
//! - Recall@K: relevant items in the top K over all relevant items.
//! - MRR: 1 / rank of the first relevant item in the ranking (trec_eval `recip_rank`),
//!   0 when none is ranked; MRR@K the same, 0 when that rank is past K.
//! - NDCG@K: linear gain, discount `1 / log2(rank + 1)`, ideal DCG from all judged
//!   relevant items (the top min(K, |relevant|) ranks filled).
//!
//! Every query counts in the mean, including those with no hit or an empty ranking
//! (trec_eval `-c`).

use std::collections::BTreeMap;

/// Where a query's relevant items landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    /// 1-based ranks of the relevant items found in the ranking, ascending.
    pub hit_ranks: Vec<usize>,
    /// Number of relevant items (found or not).
    pub relevant: usize,
}

impl Judged {
    /// Judges a ranking (best first) against a relevant set.
    pub fn of<'a>(ranking: impl IntoIterator<Item = &'a str>, relevant: &[&str]) -> Self {
        let set: std::collections::HashSet<&str> = relevant.iter().copied().collect();
        let hit_ranks = ranking
            .into_iter()
            .enumerate()
            .filter(|(_, id)| set.contains(id))
            .map(|(i, _)| i + 1)
            .collect();
        Self {
            hit_ranks,
            relevant: set.len(),
        }
    }

    /// Rank of the first relevant item, if any was ranked.
    pub fn first_rank(&self) -> Option<usize> {
        self.hit_ranks.first().copied()
    }
}

fn discount(rank: usize) -> f64 {
    1.0 / ((rank + 1) as f64).log2()
}

/// The metrics of one query: `recall@K`, `ndcg@K`, `mrr@K` for each cut-off, and `mrr`.
pub fn query_metrics(judged: &Judged, cutoffs: &[usize]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let first = judged.first_rank();
    out.insert("mrr".to_string(), first.map_or(0.0, |r| 1.0 / r as f64));
    for &k in cutoffs {
        let hits: Vec<usize> = judged
            .hit_ranks
            .iter()
            .copied()
            .filter(|&r| r <= k)
            .collect();
        let recall = if judged.relevant == 0 {
            0.0
        } else {
            hits.len() as f64 / judged.relevant as f64
        };
        let dcg: f64 = hits.iter().map(|&r| discount(r)).sum();
        let idcg: f64 = (1..=k.min(judged.relevant)).map(discount).sum();
        out.insert(format!("recall@{k}"), recall);
        out.insert(
            format!("ndcg@{k}"),
            if idcg > 0.0 { dcg / idcg } else { 0.0 },
        );
        out.insert(
            format!("mrr@{k}"),
            first.filter(|&r| r <= k).map_or(0.0, |r| 1.0 / r as f64),
        );
    }
    out
}

/// Mean of each metric over queries.
pub fn mean(per_query: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for metrics in per_query {
        for (k, v) in metrics {
            *sums.entry(k.clone()).or_default() += v;
        }
    }
    let n = per_query.len().max(1) as f64;
    sums.into_iter().map(|(k, v)| (k, v / n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Against trec_eval's own numbers (pytrec_eval), fixture made by
    /// tests/fixtures/metrics/make_metrics_fixture.py.
    #[test]
    fn metrics_match_trec_eval() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/metrics/metrics_reference.json");
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cutoffs: Vec<usize> = fixture["cutoffs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let mut all = Vec::new();
        for q in fixture["queries"].as_array().unwrap() {
            let relevant = strings(&q["relevant"]);
            let relevant: Vec<&str> = relevant.iter().map(String::as_str).collect();
            let ranking = strings(&q["ranking"]);
            let judged = Judged::of(ranking.iter().map(String::as_str), &relevant);
            let got = query_metrics(&judged, &cutoffs);
            for (key, want) in q["expected"].as_object().unwrap() {
                let g = got[key];
                assert!(
                    (g - want.as_f64().unwrap()).abs() < 1e-9,
                    "{} {key}: {g} vs {want}",
                    q["query_id"]
                );
            }
            all.push(got);
        }
        let means = mean(&all);
        for (key, want) in fixture["mean"].as_object().unwrap() {
            assert!(
                (means[key] - want.as_f64().unwrap()).abs() < 1e-9,
                "mean {key}"
            );
        }
    }

    #[test]
    fn empty_cases_score_zero() {
        let none = Judged::of(Vec::<&str>::new(), &["a"]);
        let m = query_metrics(&none, &[1, 10]);
        assert!(m.values().all(|&v| v == 0.0));
        assert!(mean(&[]).is_empty());
    }
}
