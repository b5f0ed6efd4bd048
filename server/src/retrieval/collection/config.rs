//! What a collection is created with, validated from its create request, and the
//! request that recreates it (stored as the collection's `config.pb`).

use crate::retrieval::error::StorageError;
use crate::retrieval::graph::{HnswParams, MAX_M};
use marquee_kernels::DeviceRequest;
use marquee_proto::v1::{
    index_config, CreateCollectionRequest, ExactIndex, HnswIndex, IndexConfig, Metric,
};

/// Largest vector dimension accepted.
pub const MAX_DIMENSION: usize = 65_536;

/// How a collection is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// Every item scored.
    Exact,
    /// HNSW graph.
    Hnsw(HnswParams),
}

/// What a collection was created with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Name.
    pub name: String,
    /// Vector length.
    pub dimension: usize,
    /// Similarity.
    pub metric: Metric,
    /// Index kind.
    pub index: IndexKind,
    /// Bound embedding model ("" for none).
    pub model: String,
    /// Requested device for exact search ("" for the server's default).
    pub device: String,
}

fn invalid(message: impl Into<String>) -> StorageError {
    StorageError::InvalidArgument(message.into())
}

impl Config {
    /// Checks a vector's length and values, normalising it for cosine collections.
    pub fn prepare_vector(&self, what: &str, vector: &[f32]) -> Result<Vec<f32>, StorageError> {
        if vector.len() != self.dimension {
            return Err(StorageError::InvalidArgument(format!(
                "{what} has {} dimensions, collection {} has {}",
                vector.len(),
                self.name,
                self.dimension
            )));
        }
        if vector.iter().any(|v| !v.is_finite()) {
            return Err(StorageError::InvalidArgument(format!(
                "{what} has NaN or infinite components"
            )));
        }
        let mut v = vector.to_vec();
        if self.metric == Metric::Cosine {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm == 0.0 || !norm.is_finite() {
                return Err(StorageError::InvalidArgument(format!(
                    "{what} is a zero vector, which has no cosine"
                )));
            }
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(v)
    }

    /// Validates a create request, filling defaults.
    pub fn from_request(r: &CreateCollectionRequest) -> Result<Self, StorageError> {
        // A leading '.' is refused too: the data directory keeps such names for itself
        // (collections being deleted), and start-up would not open them.
        if !crate::names::is_plain_name(&r.name) || r.name.starts_with('.') {
            return Err(invalid(format!(
                "collection name {:?} must be letters, digits, '-', '_' or '.', not starting with '.'",
                r.name
            )));
        }
        let dimension = r.dimension as usize;
        if dimension == 0 || dimension > MAX_DIMENSION {
            return Err(invalid(format!(
                "dimension {dimension} outside 1..={MAX_DIMENSION}"
            )));
        }
        let metric = match Metric::try_from(r.metric) {
            Ok(Metric::Unspecified) | Ok(Metric::Cosine) => Metric::Cosine,
            Ok(m) => m,
            Err(_) => return Err(invalid(format!("unknown metric {}", r.metric))),
        };
        let index = match r.index.as_ref().and_then(|i| i.kind.as_ref()) {
            None | Some(index_config::Kind::Exact(_)) => IndexKind::Exact,
            Some(index_config::Kind::Hnsw(h)) => {
                let params = HnswParams {
                    m: if h.m == 0 { 16 } else { h.m as usize },
                    ef_construction: if h.ef_construction == 0 {
                        200
                    } else {
                        h.ef_construction as usize
                    },
                    ef_search: if h.ef_search == 0 {
                        64
                    } else {
                        h.ef_search as usize
                    },
                };
                if !(2..=MAX_M).contains(&params.m) {
                    return Err(invalid(format!("hnsw m {} outside 2..={MAX_M}", params.m)));
                }
                if params.ef_construction > 10_000 || params.ef_search > 10_000 {
                    return Err(invalid("hnsw ef values must be at most 10000"));
                }
                IndexKind::Hnsw(params)
            }
        };
        if !r.device.is_empty() {
            r.device.parse::<DeviceRequest>().map_err(invalid)?;
        }
        Ok(Self {
            name: r.name.clone(),
            dimension,
            metric,
            index,
            model: r.model.clone(),
            device: r.device.clone(),
        })
    }

    /// The request that recreates this configuration.
    pub fn to_request(&self) -> CreateCollectionRequest {
        CreateCollectionRequest {
            name: self.name.clone(),
            dimension: self.dimension as u32,
            metric: self.metric as i32,
            index: Some(IndexConfig {
                kind: Some(match self.index {
                    IndexKind::Exact => index_config::Kind::Exact(ExactIndex {}),
                    IndexKind::Hnsw(p) => index_config::Kind::Hnsw(HnswIndex {
                        m: p.m as u32,
                        ef_construction: p.ef_construction as u32,
                        ef_search: p.ef_search as u32,
                    }),
                }),
            }),
            model: self.model.clone(),
            device: self.device.clone(),
        }
    }
}
