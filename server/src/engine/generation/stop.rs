//! Stop strings over streamed text: the text is passed on as it grows, except a tail
//! that could still become a stop string, which is held back until it cannot; when a
//! stop string appears, the text ends just before it.

/// Watches generated text for stop strings.
#[derive(Debug)]
pub struct StopStrings {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already passed on.
    emitted: usize,
}

/// What a piece of text led to.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text that can be passed on now (possibly empty).
    Continue(String),
    /// A stop string appeared: the last text to pass on; generation ends.
    Stopped(String),
}

impl StopStrings {
    /// A watcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// The text up to where it ends (all of it, or up to the stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Adds `piece` to the text.
    pub fn push(&mut self, piece: &str) -> StopOutcome {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        // A stop string found now must end inside the new piece.
        let mut search_from = self.text.len().saturating_sub(longest);
        while !self.text.is_char_boundary(search_from) {
            search_from -= 1;
        }
        self.text.push_str(piece);
        let found = self
            .stops
            .iter()
            .filter_map(|stop| self.text[search_from..].find(stop.as_str()))
            .min();
        if let Some(at) = found {
            self.text.truncate(search_from + at);
            return StopOutcome::Stopped(self.take(self.text.len()));
        }
        // Hold back the longest tail that is the start of a stop string.
        let held = self
            .stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len())
                    .filter(|&n| stop.is_char_boundary(n))
                    .map(move |n| &stop[..n])
            })
            .filter(|prefix| self.text.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let until = (self.text.len() - held).max(self.emitted);
        StopOutcome::Continue(self.take(until))
    }

    /// Everything not passed on yet (at the end of generation).
    pub fn flush(&mut self) -> String {
        self.take(self.text.len())
    }

    fn take(&mut self, until: usize) -> String {
        let piece = self.text[self.emitted..until].to_string();
        self.emitted = until;
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_passes_on_except_a_possible_stop_start() {
        let mut s = StopStrings::new(vec!["END".into(), String::new()]);
        assert_eq!(s.push("Hello E"), StopOutcome::Continue("Hello ".into()));
        assert_eq!(s.push("ND of"), StopOutcome::Stopped(String::new()));
        assert_eq!(s.text(), "Hello ");
        let mut s = StopStrings::new(vec!["END".into()]);
        assert_eq!(s.push("a E"), StopOutcome::Continue("a ".into()));
        assert_eq!(s.push("x"), StopOutcome::Continue("Ex".into()));
        assert_eq!(s.flush(), "");
        assert_eq!(s.text(), "a Ex");
    }

    #[test]
    fn the_earliest_stop_wins_and_text_before_it_is_sent() {
        let mut s = StopStrings::new(vec!["\n\n".into(), "b c".into()]);
        assert_eq!(s.push("a b"), StopOutcome::Continue("a".into()));
        assert_eq!(s.push(" c\n\nd"), StopOutcome::Stopped(" ".into()));
        assert_eq!(s.text(), "a ");
        let mut none = StopStrings::new(Vec::new());
        assert_eq!(none.push("é"), StopOutcome::Continue("é".into()));
        let mut wide = StopStrings::new(vec!["ééx".into()]);
        assert_eq!(wide.push("aé"), StopOutcome::Continue("a".into()));
        assert_eq!(wide.push("é!"), StopOutcome::Continue("éé!".into()));
    }
}
