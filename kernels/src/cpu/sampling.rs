//! Choosing tokens from a row of logits, the reference of the CUDA sampling kernels:
//! greedy choice, the log-probability of a token, and sampling after transformers'
//! logits processors in their order (repetition penalty, temperature, top-k, top-p)
//! by inverse CDF on the sorted probabilities, given the uniform number to invert.

/// How one row picks its token. `repr(C)`: the CUDA sampler reads an array of these.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSampling {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: u32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`
    /// (1: all); in `(0, 1]`.
    pub top_p: f32,
    /// Divides positive (multiplies negative) logits of tokens already seen (1: off).
    pub repetition_penalty: f32,
    /// The uniform number in `[0, 1)` inverted through the distribution's CDF.
    pub uniform: f64,
}

/// Index of the largest value, the first among equals (as `torch.argmax`); a NaN is
/// never larger than anything, nor anything larger than a NaN in front.
pub fn argmax(values: &[f32]) -> u32 {
    (1..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best }) as u32
}

/// `ln Σ exp(logits)`, vectorised (the log-probability of token `t` is
/// `logits[t] − log_sum_exp(logits)`); minus infinity when every logit is.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    super::simd::log_sum_exp(logits)
}

/// `log_softmax(logits)[token]` in f32: `l[token] − log_sum_exp(l)`.
pub fn token_logprob(logits: &[f32], token: u32) -> f32 {
    logits[token as usize] - log_sum_exp(logits)
}

/// The token `params` picks from `logits`, given the tokens `seen` so far (for the
/// repetition penalty): greedy when the temperature is 0, else the token where
/// `params.uniform` falls in the CDF of the kept tokens, most likely first.
pub fn sample(logits: &[f32], params: &RowSampling, seen: &[u32]) -> u32 {
    let penalty = params.repetition_penalty;
    let mut scaled = logits.to_vec();
    if penalty != 1.0 {
        // From the original logits, so a token seen twice is penalised once.
        for &t in seen.iter().filter(|&&t| (t as usize) < logits.len()) {
            let l = logits[t as usize];
            scaled[t as usize] = if l < 0.0 { l * penalty } else { l / penalty };
        }
    }
    if params.temperature <= 0.0 {
        return argmax(&scaled);
    }
    scaled.iter_mut().for_each(|l| *l /= params.temperature);
    // Most likely first; equal logits by index.
    let mut ranked: Vec<u32> = (0..scaled.len() as u32).collect();
    ranked.sort_by(|&a, &b| {
        let (la, lb) = (scaled[a as usize], scaled[b as usize]);
        lb.total_cmp(&la).then(a.cmp(&b))
    });
    if params.top_k > 0 {
        ranked.truncate(params.top_k as usize);
    }
    let top = scaled[ranked[0] as usize];
    let weights: Vec<f64> = ranked
        .iter()
        .map(|&t| ((scaled[t as usize] - top) as f64).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut probs: Vec<f64> = weights.iter().map(|w| w / sum).collect();
    if params.top_p < 1.0 {
        let mut reached = 0.0;
        let kept = 1 + probs
            .iter()
            .take_while(|&&q| {
                reached += q;
                reached < params.top_p as f64
            })
            .count();
        probs.truncate(kept.min(probs.len()));
        let kept_sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= kept_sum);
    }
    let mut rest = params.uniform;
    for (&t, &q) in ranked.iter().zip(&probs) {
        if rest < q {
            return t;
        }
        rest -= q;
    }
    ranked[probs.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: u32, top_p: f32, uniform: f64) -> RowSampling {
        RowSampling {
            temperature,
            top_k,
            top_p,
            repetition_penalty: 1.0,
            uniform,
        }
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 3.0]), 0);
        assert_eq!(argmax(&[1.0, f32::NAN, 2.0]), 2);
    }

    #[test]
    fn logprob_is_log_softmax() {
        let lp = token_logprob(&[0.0, 1.0_f32.ln()], 1);
        assert!((lp - 0.5f32.ln()).abs() < 1e-6, "{lp}");
    }

    #[test]
    fn penalty_applies_once_and_can_change_the_greedy_choice() {
        let p = RowSampling {
            repetition_penalty: 2.0,
            ..params(0.0, 0, 1.0, 0.0)
        };
        assert_eq!(sample(&[1.0, 3.0, 2.0], &p, &[1, 1]), 2);
        assert_eq!(sample(&[1.0, 4.2, 2.0], &p, &[1, 1]), 1);
    }

    #[test]
    fn the_uniform_is_inverted_through_the_sorted_cdf() {
        // Probabilities 0.5 (token 2), 0.25, 0.25 (tokens 0 and 1, index order).
        let l = [0.0, 0.0, 2.0f32.ln()];
        assert_eq!(sample(&l, &params(1.0, 0, 1.0, 0.49), &[]), 2);
        assert_eq!(sample(&l, &params(1.0, 0, 1.0, 0.51), &[]), 0);
        assert_eq!(sample(&l, &params(1.0, 0, 1.0, 0.76), &[]), 1);
        // top-k 2 keeps tokens 2 and 0: 2/3 and 1/3.
        assert_eq!(sample(&l, &params(1.0, 2, 1.0, 0.7), &[]), 0);
        // top-p 0.45 keeps token 2 only.
        assert_eq!(sample(&l, &params(1.0, 0, 0.45, 0.99), &[]), 2);
        // top-p 0.6 keeps tokens 2 and 0.
        assert_eq!(sample(&l, &params(1.0, 0, 0.6, 0.99), &[]), 0);
    }

    #[test]
    fn log_sum_exp_matches_f64_over_a_vocabulary() {
        // A vocabulary's worth of logits (and a tail past the vector lanes).
        let logits: Vec<f32> = (0..151_939)
            .map(|i| ((i as f32) * 0.37).sin() * 12.0 - 3.0)
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let expected = max
            + logits
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let got = log_sum_exp(&logits) as f64;
        assert!(
            (got - expected).abs() < 1e-5 * expected.abs(),
            "{got} vs {expected}"
        );
        let masked = [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY];
        assert!((log_sum_exp(&masked) - 2.0).abs() < 1e-6);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }
}
