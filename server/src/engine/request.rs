//! What a caller asks the engine to embed, in the engine's own terms (the gRPC
//! services translate their messages to these).

/// One input to embed.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A text, for a text encoder or a pipeline.
    Text(String),
    /// Token ids of the model's own vocabulary, taken as the whole model input (special
    /// tokens included, nothing added), for a text encoder.
    TokenIds(Vec<u32>),
    /// An encoded image (JPEG, PNG, WebP), for an image encoder.
    Image(Vec<u8>),
    /// A text with a poster and a thumbnail (empty: absent), for a pipeline.
    Multimodal {
        /// The text; required.
        text: String,
        /// Encoded poster, or empty.
        poster: Vec<u8>,
        /// Encoded thumbnail, or empty.
        thumbnail: Vec<u8>,
    },
    /// Embeddings to fuse as they are (an empty image embedding: absent), for a fusion
    /// model.
    FusionVectors {
        /// The text embedding.
        text: Vec<f32>,
        /// The poster embedding, or empty.
        poster: Vec<f32>,
        /// The thumbnail embedding, or empty.
        thumbnail: Vec<f32>,
    },
    /// An item's embeddings as stored in collections, for a fusion model.
    Stored(StoredInput),
    /// An input that carries none of the above.
    Missing,
}

impl Input {
    /// What the input is, for messages ("a text").
    pub fn describe(&self) -> &'static str {
        match self {
            Input::Text(_) => "a text",
            Input::TokenIds(_) => "a token-id array",
            Input::Image(_) => "an image",
            Input::Multimodal { .. } => "a multimodal input",
            Input::FusionVectors { .. } => "a set of vectors to fuse",
            Input::Stored(_) => "a stored item to fuse",
            Input::Missing => "empty",
        }
    }
}

/// Where a stored item's embeddings are: the item must be in `text_collection`; an
/// empty image collection, or one without the item, counts as an absent image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredInput {
    /// The item's id in each collection.
    pub item_id: String,
    /// Collection holding its text embedding; required.
    pub text_collection: String,
    /// Collection holding its poster embedding, or empty.
    pub poster_collection: String,
    /// Collection holding its thumbnail embedding, or empty.
    pub thumbnail_collection: String,
}

/// What to do with a text longer than the model's token limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Truncation {
    /// Keep the first tokens up to the limit (the default).
    #[default]
    End,
    /// Refuse the request instead.
    Refuse,
}
