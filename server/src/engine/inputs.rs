//! A job's inputs in the layout its model's plugin takes (see `plugins/README.md`),
//! and the assembly of several jobs' inputs into one batch: token ids for text
//! encoders, encoded image bytes for image encoders, embeddings for fusion models.
//! Handing a batch to the plugin is [`super::executor`]'s part.
//!
//! The batcher bounds a batch by inputs and by *cost*: the tokens of a text input,
//! 1 for an image or a fusion row.

/// Embeddings to fuse, row by row (`n` rows).
#[derive(Debug, Default)]
pub struct FusionRows {
    /// Width of a text row.
    pub text_dim: usize,
    /// Width of a poster or thumbnail row.
    pub image_dim: usize,
    /// `n × text_dim` values.
    pub text: Vec<f32>,
    /// `n × image_dim` values; zeros where the poster is absent.
    pub poster: Vec<f32>,
    /// `n × image_dim` values; zeros where the thumbnail is absent.
    pub thumbnail: Vec<f32>,
    /// `n × 2` flags: poster, thumbnail present (1) or absent (0).
    pub present: Vec<u8>,
}

impl FusionRows {
    /// No rows yet, for rows of these widths.
    pub fn new(text_dim: usize, image_dim: usize) -> Self {
        Self {
            text_dim,
            image_dim,
            ..Self::default()
        }
    }

    /// Appends a row; absent images are zeros.
    pub fn push(&mut self, text: &[f32], poster: Option<&[f32]>, thumbnail: Option<&[f32]>) {
        self.text.extend_from_slice(text);
        for (image, column) in [(poster, &mut self.poster), (thumbnail, &mut self.thumbnail)] {
            match image {
                Some(v) => column.extend_from_slice(v),
                None => column.resize(column.len() + self.image_dim, 0.0),
            }
        }
        self.present
            .extend([u8::from(poster.is_some()), u8::from(thumbnail.is_some())]);
    }

    /// How many rows.
    pub fn rows(&self) -> usize {
        self.present.len() / 2
    }

    fn copy_row(&mut self, from: &FusionRows, i: usize) {
        let (t, m) = (self.text_dim, self.image_dim);
        self.text.extend_from_slice(&from.text[i * t..(i + 1) * t]);
        self.poster
            .extend_from_slice(&from.poster[i * m..(i + 1) * m]);
        self.thumbnail
            .extend_from_slice(&from.thumbnail[i * m..(i + 1) * m]);
        self.present
            .extend_from_slice(&from.present[i * 2..i * 2 + 2]);
    }
}

/// The inputs of one job, or of one batch.
#[derive(Debug)]
pub enum Inputs {
    /// Token ids back to back, with `n + 1` offsets into them.
    Tokens {
        /// Every input's ids.
        ids: Vec<u32>,
        /// Input boundaries, starting at 0.
        offsets: Vec<usize>,
    },
    /// Encoded images back to back, with `n + 1` byte offsets.
    Images {
        /// Every image's bytes.
        bytes: Vec<u8>,
        /// Image boundaries, starting at 0.
        offsets: Vec<usize>,
    },
    /// Rows of embeddings to fuse.
    Fusion(FusionRows),
}

impl Inputs {
    /// How many inputs.
    pub fn count(&self) -> usize {
        match self {
            Inputs::Tokens { offsets, .. } | Inputs::Images { offsets, .. } => offsets.len() - 1,
            Inputs::Fusion(rows) => rows.rows(),
        }
    }

    /// The cost of input `i` (tokens for text, 1 otherwise).
    pub fn cost(&self, i: usize) -> usize {
        match self {
            Inputs::Tokens { offsets, .. } => offsets[i + 1] - offsets[i],
            _ => 1,
        }
    }

    /// The cost of inputs `from..`.
    pub fn cost_from(&self, from: usize) -> usize {
        match self {
            Inputs::Tokens { ids, offsets } => ids.len() - offsets[from],
            _ => self.count() - from,
        }
    }

    /// An empty batch of the same kind (and widths, for fusion rows).
    pub fn empty_like(&self) -> Inputs {
        match self {
            Inputs::Tokens { .. } => Inputs::Tokens {
                ids: Vec::new(),
                offsets: vec![0],
            },
            Inputs::Images { .. } => Inputs::Images {
                bytes: Vec::new(),
                offsets: vec![0],
            },
            Inputs::Fusion(rows) => Inputs::Fusion(FusionRows::new(rows.text_dim, rows.image_dim)),
        }
    }

    /// Appends input `i` of `from` to this batch; false (nothing appended) when it is
    /// of another kind or width, or when the batch's byte offsets would overflow.
    pub fn append(&mut self, from: &Inputs, i: usize) -> bool {
        match (self, from) {
            (
                Inputs::Tokens { ids, offsets },
                Inputs::Tokens {
                    ids: src,
                    offsets: o,
                },
            ) => {
                ids.extend_from_slice(&src[o[i]..o[i + 1]]);
                offsets.push(ids.len());
                true
            }
            (
                Inputs::Images { bytes, offsets },
                Inputs::Images {
                    bytes: src,
                    offsets: o,
                },
            ) => {
                if bytes.len() + (o[i + 1] - o[i]) > u32::MAX as usize {
                    return false;
                }
                bytes.extend_from_slice(&src[o[i]..o[i + 1]]);
                offsets.push(bytes.len());
                true
            }
            (Inputs::Fusion(rows), Inputs::Fusion(src))
                if rows.text_dim == src.text_dim && rows.image_dim == src.image_dim =>
            {
                rows.copy_row(src, i);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_take_inputs_of_their_own_kind_and_width() {
        let tokens = Inputs::Tokens {
            ids: vec![1, 2, 3, 4, 5],
            offsets: vec![0, 2, 5],
        };
        assert_eq!(
            (tokens.count(), tokens.cost(1), tokens.cost_from(1)),
            (2, 3, 3)
        );
        let mut batch = tokens.empty_like();
        assert!(batch.append(&tokens, 1));
        assert!(batch.append(&tokens, 0));
        let Inputs::Tokens { ids, offsets } = &batch else {
            unreachable!()
        };
        assert_eq!(
            (ids.as_slice(), offsets.as_slice()),
            (&[3, 4, 5, 1, 2][..], &[0, 3, 5][..])
        );

        let images = Inputs::Images {
            bytes: b"abcde".to_vec(),
            offsets: vec![0, 1, 5],
        };
        assert_eq!((images.cost(1), images.cost_from(0)), (1, 2));
        assert!(!batch.append(&images, 0), "an image in a token batch");
        let mut image_batch = images.empty_like();
        assert!(image_batch.append(&images, 1));
        assert_eq!(image_batch.count(), 1);

        let mut rows = FusionRows::new(2, 3);
        rows.push(&[1.0, 2.0], None, Some(&[7.0, 8.0, 9.0]));
        let fusion = Inputs::Fusion(rows);
        let mut fused = fusion.empty_like();
        assert!(fused.append(&fusion, 0));
        let Inputs::Fusion(r) = &fused else {
            unreachable!()
        };
        assert_eq!(r.poster, [0.0; 3]);
        assert_eq!(r.thumbnail, [7.0, 8.0, 9.0]);
        assert_eq!(r.present, [0, 1]);
        let mut other_width = Inputs::Fusion(FusionRows::new(2, 4));
        assert!(!other_width.append(&fusion, 0));
    }
}
