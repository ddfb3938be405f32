//! Stop strings over streamed text. Text that could be the beginning of a stop string is held back
//! until it either completes one (then the generation stops and the stop string is never emitted)
//! or can no longer match (then it is released). So a stop string split across tokens is still
//! caught, and no emitted text ever has to be taken back.

#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
}

/// What [`StopStrings::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCheck {
    /// Text safe to emit now.
    pub emit: String,
    /// A stop string was completed; `emit` ends right before it.
    pub stopped: bool,
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops, held: String::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Adds newly decoded text; returns what may be emitted.
    pub fn push(&mut self, text: &str) -> StopCheck {
        if self.stops.is_empty() {
            return StopCheck { emit: text.to_string(), stopped: false };
        }
        self.held.push_str(text);
        // Earliest stop string occurrence wins.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return StopCheck { emit, stopped: true };
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopCheck { emit, stopped: false }
    }

    /// Releases the held-back text (the generation ended for another reason).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}
