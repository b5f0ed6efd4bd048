//! The RPC mix: which RPCs a load run sends, in what proportions.

use anyhow::{bail, Context, Result};
use rand::Rng;

/// An RPC the load tester can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RpcKind {
    /// `EmbeddingService/Embed`.
    Embed,
    /// `RetrievalService/Search`.
    Search,
    /// `RetrievalService/Recommend`.
    Recommend,
}

impl RpcKind {
    /// Every kind, in report order.
    pub const ALL: [RpcKind; 3] = [RpcKind::Embed, RpcKind::Search, RpcKind::Recommend];

    /// The lower-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            RpcKind::Embed => "embed",
            RpcKind::Search => "search",
            RpcKind::Recommend => "recommend",
        }
    }

    fn from_name(name: &str) -> Option<RpcKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Relative weights of the RPC kinds; requests are drawn independently in proportion.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    weights: [f64; 3],
}

impl Mix {
    /// Parses `embed=1,search=2,recommend=0`; kinds left out weigh 0, and at least one
    /// weight must be positive.
    pub fn parse(spec: &str) -> Result<Mix> {
        let mut weights = [0.0; 3];
        let mut seen = [false; 3];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("{part:?}: expected RPC=WEIGHT"))?;
            let kind = RpcKind::from_name(name.trim()).with_context(|| {
                format!("unknown RPC {name:?} (known: embed, search, recommend)")
            })?;
            let weight: f64 = weight
                .trim()
                .parse()
                .with_context(|| format!("{part:?}: the weight is not a number"))?;
            if !weight.is_finite() || weight < 0.0 {
                bail!("{part:?}: weights must be finite and not negative");
            }
            if std::mem::replace(&mut seen[kind as usize], true) {
                bail!("{name} appears twice in the mix");
            }
            weights[kind as usize] = weight;
        }
        if weights.iter().all(|&w| w == 0.0) {
            bail!("the mix {spec:?} gives no RPC a positive weight");
        }
        Ok(Mix { weights })
    }

    /// The kinds with a positive weight, in report order.
    pub fn kinds(&self) -> Vec<RpcKind> {
        RpcKind::ALL
            .into_iter()
            .filter(|k| self.weight(*k) > 0.0)
            .collect()
    }

    /// The weight of one kind.
    pub fn weight(&self, kind: RpcKind) -> f64 {
        self.weights[kind as usize]
    }

    /// Draws the kind of the next request.
    pub fn sample(&self, rng: &mut impl Rng) -> RpcKind {
        let total: f64 = self.weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        for kind in RpcKind::ALL {
            let w = self.weight(kind);
            if w > 0.0 && u < w {
                return kind;
            }
            u -= w;
        }
        // Rounding left `u` at the very top: the last kind with a weight.
        *self.kinds().last().expect("a positive weight")
    }

    /// The mix written back as `embed=W,search=W,recommend=W`.
    pub fn spec(&self) -> String {
        RpcKind::ALL
            .iter()
            .map(|k| format!("{}={}", k.name(), self.weight(*k)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn parses_weights_and_defaults_missing_kinds_to_zero() {
        let mix = Mix::parse("embed=3, search=1").unwrap();
        assert_eq!(mix.weight(RpcKind::Embed), 3.0);
        assert_eq!(mix.weight(RpcKind::Search), 1.0);
        assert_eq!(mix.weight(RpcKind::Recommend), 0.0);
        assert_eq!(mix.kinds(), vec![RpcKind::Embed, RpcKind::Search]);
        assert_eq!(mix.spec(), "embed=3,search=1,recommend=0");
    }

    #[test]
    fn refuses_bad_mixes() {
        for bad in [
            "",
            "embed=0,search=0",
            "embed",
            "embed=x",
            "embed=-1",
            "embed=inf",
            "upsert=1",
            "embed=1,embed=2",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn samples_in_proportion_and_never_a_zero_weight() {
        let mix = Mix::parse("embed=1,search=3,recommend=0").unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        let n = 40_000;
        for _ in 0..n {
            counts[mix.sample(&mut rng) as usize] += 1;
        }
        assert_eq!(counts[RpcKind::Recommend as usize], 0);
        let search_share = counts[RpcKind::Search as usize] as f64 / n as f64;
        assert!(
            (search_share - 0.75).abs() < 0.01,
            "search share {search_share}"
        );
    }

    #[test]
    fn a_single_kind_is_always_drawn() {
        let mix = Mix::parse("recommend=0.5").unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..1000).all(|_| mix.sample(&mut rng) == RpcKind::Recommend));
    }
}
