//! Ids for the in-process backend, shaped like Redis stream ids (`<unix ms>-<seq>`) so both
//! backends give clients the same kind of resumable, ordered id.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub(super) struct IdGen {
    last: Mutex<(u64, u64)>,
}

impl IdGen {
    pub(super) fn next(&self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut last = self.last.lock().unwrap();
        // Strictly increasing even if the clock steps back.
        *last = if now > last.0 { (now, 0) } else { (last.0, last.1 + 1) };
        format!("{}-{}", last.0, last.1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_increase() {
        let ids = super::IdGen::default();
        let parse = |s: String| {
            let (a, b) = s.split_once('-').unwrap();
            (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap())
        };
        let mut prev = parse(ids.next());
        for _ in 0..1000 {
            let next = parse(ids.next());
            assert!(next > prev);
            prev = next;
        }
    }
}
