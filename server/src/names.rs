//! Names of plugins, models, pipelines and collections.

/// Whether a plugin, model or collection name is a plain name: no path separators,
/// no `..`, and not `.` (each names a directory or file on disk).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..")
        && name != "."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        assert!(is_plain_name("marquee_bert_text"));
        assert!(is_plain_name("all-MiniLM-L6-v2"));
        assert!(is_plain_name(".hidden-but-plain"));
        for bad in ["", ".", "../x", "a/b", "..", "a\\b", "x y"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
