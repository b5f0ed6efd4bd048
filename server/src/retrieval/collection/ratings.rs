//! Users' rating histories, logged like items, and the mean of a user's liked items
//! that Recommend searches with.

use super::state::ratings_record;
use super::Collection;
use crate::retrieval::error::StorageError;
use marquee_proto::v1::{Metric, Rating};
use std::collections::HashMap;

impl Collection {
    /// Appends ratings to a user's history.
    pub fn record_ratings(
        &self,
        user_id: String,
        ratings: Vec<Rating>,
    ) -> Result<usize, StorageError> {
        if user_id.is_empty() {
            return Err(StorageError::InvalidArgument(
                "ratings need a user_id".to_string(),
            ));
        }
        if let Some(r) = ratings
            .iter()
            .find(|r| r.item_id.is_empty() || !r.rating.is_finite())
        {
            return Err(StorageError::InvalidArgument(format!(
                "user {user_id}: rating {:?} of item {:?} is invalid",
                r.rating, r.item_id
            )));
        }
        let n = ratings.len();
        self.write(ratings_record(user_id, ratings))?;
        Ok(n)
    }

    /// A user's recorded ratings.
    pub fn user_ratings(&self, user: &str) -> Option<Vec<Rating>> {
        self.state().ratings.get(user).cloned()
    }

    /// Every user's ratings (for evaluation).
    pub fn all_ratings(&self) -> HashMap<String, Vec<Rating>> {
        self.state().ratings.clone()
    }

    /// Mean of the stored vectors of `ids` (those present), normalised for cosine;
    /// `None` when none is present.
    pub fn mean_vector(&self, ids: &[&str]) -> Option<Vec<f32>> {
        let state = self.state();
        let dim = self.config.dimension;
        let mut sum = vec![0f32; dim];
        let mut n = 0usize;
        for id in ids {
            if let Some(&row) = state.rows.get(*id) {
                sum.iter_mut()
                    .zip(state.vector(row as usize, dim))
                    .for_each(|(s, v)| *s += v);
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        sum.iter_mut().for_each(|s| *s /= n as f32);
        if self.config.metric == Metric::Cosine {
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                sum.iter_mut().for_each(|s| *s /= norm);
            }
        }
        Some(sum)
    }
}
