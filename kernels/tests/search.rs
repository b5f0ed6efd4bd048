//! The search entry point over a host corpus: per-row rules from the corpus, restrictions
//! from the filter, the same hits with and without the f16 copy, a few queries or many.

use marquee_kernels::search::{search, Corpus, HostCorpus, SearchFilter};
use marquee_kernels::{HalfCopy, Matrix};

/// Row `r` of an `n × 2` matrix is `(1, r / 100)`, so later rows score higher against
/// `(0, 1)` and rows tie against `(1, 0)`.
fn rows(n: usize) -> Matrix {
    Matrix {
        rows: n,
        cols: 2,
        data: (0..n).flat_map(|r| [1.0, r as f32 / 100.0]).collect(),
    }
}

fn ids(hits: &[marquee_kernels::Hit]) -> Vec<u32> {
    hits.iter().map(|h| h.index).collect()
}

#[test]
fn search_applies_the_corpus_rules_and_the_filter_on_both_cpu_paths() {
    let corpus = rows(50);
    let half = HalfCopy::of(&corpus).expect("small values fit in f16");
    let tie_rank: Vec<u32> = (0..50).rev().collect();
    let mut row_bias = vec![0.0f32; 50];
    row_bias[3] = 10.0;
    let allowed: Vec<bool> = (0..50).map(|r| r != 49).collect();
    // Two queries go through the f16 shortlist, twenty through the blocked GEMM.
    for nq in [2, 20] {
        let queries = Matrix {
            rows: nq,
            cols: 2,
            data: (0..nq)
                .flat_map(|q| [(q % 2) as f32, 1.0 - (q % 2) as f32])
                .collect(),
        };
        let excluded: Vec<Vec<u32>> = (0..nq).map(|_| vec![48]).collect();
        let filter = SearchFilter {
            allowed: Some(&allowed),
            excluded: Some(&excluded),
        };
        for copy in [None, Some(&half)] {
            let corpus = Corpus::Cpu(HostCorpus {
                rows: &corpus,
                half: copy,
                row_bias: Some(&row_bias),
                tie_rank: Some(&tie_rank),
            });
            let hits = search(&corpus, &queries, 3, &filter).unwrap();
            assert_eq!(hits.len(), nq);
            // (0, 1): the biased row first, then the highest rows the filter leaves.
            // (1, 0): every row scores 1 but row 3; ties go to the lowest tie rank.
            for query_hits in &hits[..2] {
                let f16 = copy.is_some();
                assert_eq!(ids(query_hits), [3, 47, 46], "{nq} queries, f16 {f16}");
            }
            assert_eq!(hits[0][0].score, 10.03);
            assert_eq!(hits[1][1].score, 1.0);
        }
    }
}

#[test]
fn search_checks_the_rules_against_the_corpus() {
    let corpus = rows(4);
    let queries = rows(1);
    let short = [0.0f32; 3];
    let bad = Corpus::Cpu(HostCorpus {
        rows: &corpus,
        half: None,
        row_bias: Some(&short),
        tie_rank: None,
    });
    assert!(search(&bad, &queries, 1, &SearchFilter::default()).is_err());
}
