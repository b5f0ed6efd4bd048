//! What the generation metrics score: items of one candidate text and its references.
//!
//! An empty candidate or an empty reference string is valid input (it has no tokens and
//! scores as the reference packages score it); an empty list of items, or an item with no
//! reference at all, is an error. Items may have different numbers of references.

/// One candidate text and the references it is scored against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationItem<'a> {
    /// The generated text (sacrebleu's hypothesis, rouge-score's prediction).
    pub candidate: &'a str,
    /// The texts written by people (sacrebleu's references, rouge-score's targets).
    pub references: &'a [String],
}

/// Input the generation metrics refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerationInputError {
    /// No item to score.
    #[error("no items to score")]
    NoItems,
    /// An item with an empty list of references.
    #[error("item {index} has no reference")]
    NoReferences {
        /// 0-based position of the item.
        index: usize,
    },
}

/// Checks that there is at least one item and that every item has a reference.
pub fn check_items(items: &[GenerationItem<'_>]) -> Result<(), GenerationInputError> {
    if items.is_empty() {
        return Err(GenerationInputError::NoItems);
    }
    match items.iter().position(|item| item.references.is_empty()) {
        Some(index) => Err(GenerationInputError::NoReferences { index }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_are_refused_and_empty_texts_are_not() {
        assert_eq!(check_items(&[]), Err(GenerationInputError::NoItems));
        let refs = vec![String::new()];
        let ok = GenerationItem {
            candidate: "",
            references: &refs,
        };
        let none = GenerationItem {
            candidate: "a",
            references: &[],
        };
        assert_eq!(check_items(&[ok]), Ok(()));
        assert_eq!(
            check_items(&[ok, none]),
            Err(GenerationInputError::NoReferences { index: 1 })
        );
        assert_eq!(
            GenerationInputError::NoReferences { index: 1 }.to_string(),
            "item 1 has no reference"
        );
    }
}
