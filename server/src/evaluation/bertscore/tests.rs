//! BERTScore on hand-made 2-D token states whose scores are worked out by hand. The
//! golden figures of bert-score itself are checked end to end, through the bert-text
//! plugin, in `tests/bertscore.rs`.

use super::*;

const CLS: u32 = 101;
const SEP: u32 = 102;
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// A text of `[CLS] tokens… [SEP]`, [CLS] and [SEP] along the x axis (scaled, to show that
/// states are normalised).
fn text(tokens: &[(u32, [f32; 2])]) -> EncodedText {
    let mut all = vec![(CLS, [3.0, 0.0])];
    all.extend_from_slice(tokens);
    all.push((SEP, [0.5, 0.0]));
    EncodedText {
        ids: all.iter().map(|(id, _)| *id).collect(),
        states: all.iter().flat_map(|(_, s)| *s).collect(),
    }
}

fn settings(idf: bool) -> BertScoreSettings {
    BertScoreSettings {
        dim: 2,
        special_ids: [CLS, SEP],
        idf,
        baseline: None,
    }
}

fn item<'a>(candidate: &'a EncodedText, references: &[&'a EncodedText]) -> EncodedItem<'a> {
    EncodedItem {
        candidate,
        references: references.to_vec(),
    }
}

fn assert_scores(got: Scores, want: [f64; 3]) {
    let got_all = [got.precision, got.recall, got.f1];
    for (g, w) in got_all.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got_all:?} vs {want:?}");
    }
}

/// Candidate `[CLS] up [SEP]`; reference `[CLS] diagonal down [SEP]`.
fn up_and_diagonal() -> (EncodedText, EncodedText) {
    (
        text(&[(5, [0.0, 2.0])]),
        text(&[(6, [1.0, 1.0]), (7, [0.0, -4.0])]),
    )
}

#[test]
fn greedy_matching_weighs_special_tokens_zero_but_matches_them() {
    let (candidate, reference) = up_and_diagonal();
    let report = bertscore(&[item(&candidate, &[&reference])], &settings(false)).unwrap();
    // P: "up" matches the diagonal (cos 1/√2). R: the diagonal matches [CLS] or "up"
    // (1/√2); "down" matches [CLS] and [SEP] at 0, better than "up" at −1.
    let (p, r) = (FRAC_1_SQRT_2, FRAC_1_SQRT_2 / 2.0);
    assert_scores(report.per_item[0].scores, [p, r, 2.0 * p * r / (p + r)]);
    assert_eq!(report.per_item[0].best_reference, 0);
    assert_eq!(report.mean, report.per_item[0].scores);

    let same = bertscore(&[item(&reference, &[&reference])], &settings(false)).unwrap();
    assert_scores(same.mean, [1.0, 1.0, 1.0]);
}

#[test]
fn idf_counts_each_reference_once_over_the_whole_call() {
    let (candidate, reference) = up_and_diagonal();
    // A second item whose reference also holds token 6 (twice, counted once): with M = 2
    // references, 6 weighs ln(3/3) = 0, 7 weighs ln(3/2), and 5 (in no reference) ln 3.
    let other = text(&[(6, [1.0, 1.0]), (6, [1.0, 1.0])]);
    let items = [item(&candidate, &[&reference]), item(&candidate, &[&other])];
    let report = bertscore(&items, &settings(true)).unwrap();
    // Item 0: P as without IDF (one weighted token); R only from "down", which matches
    // at 0: R = 0 and F = 0.
    assert_scores(report.per_item[0].scores, [FRAC_1_SQRT_2, 0.0, 0.0]);
    // Item 1: the reference's tokens all weigh 0, R = 0/0 = NaN and F is set to 0.
    let second = report.per_item[1].scores;
    assert!((second.precision - FRAC_1_SQRT_2).abs() < 1e-12);
    assert!(second.recall.is_nan());
    assert_eq!(second.f1, 0.0);
    assert!(report.mean.recall.is_nan());
    assert_eq!(report.mean.f1, 0.0);
}

#[test]
fn empty_texts_score_zero() {
    let (candidate, reference) = up_and_diagonal();
    let empty = text(&[]);
    for idf in [false, true] {
        let report = bertscore(
            &[item(&empty, &[&reference]), item(&candidate, &[&empty])],
            &settings(idf),
        )
        .unwrap();
        assert_scores(report.per_item[0].scores, [0.0, 0.0, 0.0]);
        assert_scores(report.per_item[1].scores, [0.0, 0.0, 0.0]);
    }
}

#[test]
fn several_references_keep_each_score_at_its_maximum_then_rescale() {
    let (candidate, diagonal) = up_and_diagonal();
    // Reference 1: "up" itself and "down": P = 1, R = (1 + 0) / 2.
    let up_down = text(&[(5, [0.0, 1.0]), (7, [0.0, -1.0])]);
    // Reference 2: "up" alone: P = R = F = 1.
    let up = text(&[(5, [0.0, 5.0])]);
    let report = bertscore(
        &[
            item(&candidate, &[&diagonal, &up_down]),
            item(&candidate, &[&up_down, &diagonal]),
        ],
        &settings(false),
    )
    .unwrap();
    for scored in &report.per_item {
        assert_scores(scored.scores, [1.0, 0.5, 2.0 / 3.0]);
    }
    assert_eq!(
        report
            .per_item
            .iter()
            .map(|i| i.best_reference)
            .collect::<Vec<_>>(),
        [1, 0]
    );
    // P's maximum from one reference, R's from another.
    let mixed = text(&[(6, [1.0, 1.0])]);
    let report = bertscore(
        &[item(&candidate, &[&mixed, &up, &diagonal])],
        &settings(false),
    )
    .unwrap();
    assert_scores(report.mean, [1.0, 1.0, 1.0]);
    assert_eq!(report.per_item[0].best_reference, 1);
    let report = bertscore(&[item(&candidate, &[&diagonal, &mixed])], &settings(false)).unwrap();
    assert_scores(report.mean, [FRAC_1_SQRT_2, FRAC_1_SQRT_2, FRAC_1_SQRT_2]);

    let baseline = Baseline::parse("LAYER,P,R,F\n0,0.5,0.25,0.5\n").unwrap();
    let rescaled = BertScoreSettings {
        baseline: Some(baseline.row(0).unwrap()),
        ..settings(false)
    };
    let report = bertscore(&[item(&candidate, &[&diagonal, &up_down])], &rescaled).unwrap();
    let third = |s: f64, b: f64| (s - b) / (1.0 - b);
    let got = report.mean;
    assert!((got.precision - 1.0).abs() < 1e-6, "{got:?}");
    assert!((got.recall - third(0.5, 0.25)).abs() < 1e-6, "{got:?}");
    assert!((got.f1 - third(2.0 / 3.0, 0.5)).abs() < 1e-6, "{got:?}");
}

#[test]
fn malformed_input_is_refused() {
    let (candidate, reference) = up_and_diagonal();
    let err = |items: &[EncodedItem<'_>]| bertscore(items, &settings(false)).unwrap_err();
    assert_eq!(
        err(&[]),
        BertScoreError::Input(GenerationInputError::NoItems)
    );
    assert_eq!(
        err(&[item(&candidate, &[&reference]), item(&candidate, &[])]).to_string(),
        "item 1 has no reference"
    );
    let short = EncodedText {
        ids: vec![CLS],
        states: vec![1.0, 0.0],
    };
    assert_eq!(
        err(&[item(&candidate, &[&short])]).to_string(),
        "a text has 1 tokens; BERTScore needs its 2 special tokens at least"
    );
    let ragged = EncodedText {
        ids: vec![CLS, SEP],
        states: vec![1.0, 0.0, 1.0],
    };
    assert_eq!(
        err(&[item(&ragged, &[&reference])]).to_string(),
        "a text of 2 tokens has 3 state values, not 2 × 2"
    );
}
