//! Longest common subsequences as rouge-score 0.1.2 computes them: the length for ROUGE-L,
//! and the summary-level union LCS hits for ROUGE-Lsum, with its backtracking order (which
//! decides which tokens of a reference count as hits).

use std::collections::{BTreeSet, HashMap};

/// The dynamic-programming table of LCS lengths of every pair of prefixes
/// (`_lcs_table`), `(reference.len() + 1) × (candidate.len() + 1)`.
fn lcs_table(reference: &[String], candidate: &[String]) -> Vec<Vec<usize>> {
    let mut table = vec![vec![0; candidate.len() + 1]; reference.len() + 1];
    for i in 1..=reference.len() {
        for j in 1..=candidate.len() {
            table[i][j] = if reference[i - 1] == candidate[j - 1] {
                table[i - 1][j - 1] + 1
            } else {
                table[i - 1][j].max(table[i][j - 1])
            };
        }
    }
    table
}

/// Length of the longest common subsequence of two token lists.
pub(super) fn lcs_len(reference: &[String], candidate: &[String]) -> usize {
    lcs_table(reference, candidate)[reference.len()][candidate.len()]
}

/// Positions in `reference` of one longest common subsequence, ascending, chosen as
/// rouge-score's `_backtrack_norec` chooses it.
fn lcs_positions(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let table = lcs_table(reference, candidate);
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut positions = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            positions.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i][j - 1] > table[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    positions.reverse();
    positions
}

/// Summary-level LCS hits (`_summary_level_lcs`): for each reference sentence, the union
/// of its LCS positions against every candidate sentence; a token of that union is a hit
/// while it has unused occurrences in both the whole reference and the whole candidate.
pub(super) fn summary_lcs_hits(reference: &[Vec<String>], candidate: &[Vec<String>]) -> usize {
    let mut reference_left = token_counts(reference);
    let mut candidate_left = token_counts(candidate);
    let mut hits = 0;
    for sentence in reference {
        let union: BTreeSet<usize> = candidate
            .iter()
            .flat_map(|other| lcs_positions(sentence, other))
            .collect();
        for token in union.into_iter().map(|i| sentence[i].as_str()) {
            let (Some(r), Some(c)) = (reference_left.get_mut(token), candidate_left.get_mut(token))
            else {
                continue;
            };
            if *r > 0 && *c > 0 {
                hits += 1;
                *r -= 1;
                *c -= 1;
            }
        }
    }
    hits
}

/// Occurrences of each token over all sentences.
fn token_counts(sentences: &[Vec<String>]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for token in sentences.iter().flatten() {
        *counts.entry(token.as_str()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn backtracking_prefers_the_reference_side_on_ties() {
        // "a b" against "b a": both LCS have length 1; rouge-score steps up in the
        // reference on a tie, so it keeps the reference's first token.
        assert_eq!(lcs_len(&tokens("a b"), &tokens("b a")), 1);
        assert_eq!(lcs_positions(&tokens("a b"), &tokens("b a")), [0]);
        assert_eq!(
            lcs_positions(&tokens("w1 w2 w3 w4 w5"), &tokens("w1 w2 w6 w7 w8")),
            [0, 1]
        );
    }

    #[test]
    fn summary_hits_follow_the_rouge_paper_example() {
        // ROUGE paper, section 3.2: r = w1..w5, c1 = w1 w2 w6 w7 w8, c2 = w1 w3 w8 w9 w5;
        // the union LCS is w1 w2 w3 w5, 4 hits.
        let reference = vec![tokens("w1 w2 w3 w4 w5")];
        let candidate = vec![tokens("w1 w2 w6 w7 w8"), tokens("w1 w3 w8 w9 w5")];
        assert_eq!(summary_lcs_hits(&reference, &candidate), 4);
    }
}
