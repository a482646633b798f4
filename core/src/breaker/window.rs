//! Sliding windows over recent calls: the last N calls, or the last N seconds.
//!
//! Each window keeps exact counts, so the failure rate is always computed over the calls that
//! are really in it (no approximation), and its memory is fixed by the policy.

use super::policy::WindowKind;

/// One call as the window records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub failed: bool,
    pub slow: bool,
}

/// Aggregates over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStats {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

impl WindowStats {
    /// Failure rate in percent (0 when empty).
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow-call rate in percent (0 when empty).
    pub fn slow_rate(&self) -> f64 {
        percent(self.slow, self.calls)
    }
}

fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}

const FAILED_BIT: u8 = 1;
const SLOW_BIT: u8 = 2;

/// The last `size` calls, one byte each in a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountWindow {
    pub(crate) slots: Vec<u8>,
    pub(crate) head: u32,
    pub(crate) len: u32,
}

impl CountWindow {
    pub fn new(size: u32) -> Self {
        CountWindow { slots: vec![0; size as usize], head: 0, len: 0 }
    }

    fn record(&mut self, s: Sample) {
        let size = self.slots.len() as u32;
        if size == 0 {
            return;
        }
        if let Some(slot) = self.slots.get_mut(self.head as usize) {
            *slot = (u8::from(s.failed) * FAILED_BIT) | (u8::from(s.slow) * SLOW_BIT);
        }
        self.head = (self.head + 1) % size;
        self.len = (self.len + 1).min(size);
    }

    fn stats(&self) -> WindowStats {
        // Only the first `len` slots written so far hold calls; the ring is full once len == size.
        let size = self.slots.len() as u32;
        let mut st = WindowStats { calls: self.len, ..Default::default() };
        for i in 0..self.len {
            let idx = (self.head + size - 1 - i) % size;
            let v = self.slots.get(idx as usize).copied().unwrap_or(0);
            st.failures += u32::from(v & FAILED_BIT != 0);
            st.slow += u32::from(v & SLOW_BIT != 0);
        }
        st
    }
}

/// One second of a time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub second: u32,
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

/// The calls of the last `size` seconds, one bucket per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    pub(crate) buckets: Vec<Bucket>,
}

impl TimeWindow {
    pub fn new(size: u32) -> Self {
        TimeWindow { buckets: vec![Bucket::default(); size as usize] }
    }

    fn record(&mut self, s: Sample, now_ms: u64) {
        let second = (now_ms / 1000) as u32;
        let n = self.buckets.len() as u32;
        if n == 0 {
            return;
        }
        if let Some(b) = self.buckets.get_mut((second % n) as usize) {
            if b.second != second || b.calls == 0 {
                *b = Bucket { second, ..Bucket::default() };
            }
            // Saturating: the counts come back from shared data, which any VM may have written.
            b.calls = b.calls.saturating_add(1);
            b.failures = b.failures.saturating_add(u32::from(s.failed));
            b.slow = b.slow.saturating_add(u32::from(s.slow));
        }
    }

    fn stats(&self, now_ms: u64) -> WindowStats {
        let second = (now_ms / 1000) as u32;
        let n = self.buckets.len() as u32;
        let mut st = WindowStats::default();
        for b in &self.buckets {
            if b.calls > 0 && b.second <= second && second - b.second < n {
                st.calls = st.calls.saturating_add(b.calls);
                st.failures = st.failures.saturating_add(b.failures);
                st.slow = st.slow.saturating_add(b.slow);
            }
        }
        st
    }
}

/// Either kind of window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub fn new(kind: WindowKind, size: u32) -> Self {
        match kind {
            WindowKind::Count => Window::Count(CountWindow::new(size)),
            WindowKind::Time => Window::Time(TimeWindow::new(size)),
        }
    }

    /// True when this window has the shape the policy asks for (a config change resets it).
    pub fn fits(&self, kind: WindowKind, size: u32) -> bool {
        match self {
            Window::Count(w) => kind == WindowKind::Count && w.slots.len() == size as usize,
            Window::Time(w) => kind == WindowKind::Time && w.buckets.len() == size as usize,
        }
    }

    /// A count window full of clean calls: recording one more clean call only turns the ring
    /// (every slot alike), so it changes nothing that matters and needs no write.
    pub fn full_and_clean(&self) -> bool {
        match self {
            Window::Count(w) => w.len as usize == w.slots.len() && w.slots.iter().all(|&v| v == 0),
            Window::Time(_) => false,
        }
    }

    pub fn record(&mut self, s: Sample, now_ms: u64) {
        match self {
            Window::Count(w) => w.record(s),
            Window::Time(w) => w.record(s, now_ms),
        }
    }

    pub fn stats(&self, now_ms: u64) -> WindowStats {
        match self {
            Window::Count(w) => w.stats(),
            Window::Time(w) => w.stats(now_ms),
        }
    }

    pub fn reset(&mut self) {
        match self {
            Window::Count(w) => *w = CountWindow::new(w.slots.len() as u32),
            Window::Time(w) => *w = TimeWindow::new(w.buckets.len() as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;

    const OK: Sample = Sample { failed: false, slow: false };
    const FAIL: Sample = Sample { failed: true, slow: false };
    const SLOW: Sample = Sample { failed: false, slow: true };

    #[wasm_bindgen_test(unsupported = test)]
    fn count_window_forgets_the_oldest_call() {
        let mut w = Window::new(WindowKind::Count, 3);
        for s in [FAIL, FAIL, OK] {
            w.record(s, 0);
        }
        assert_eq!(w.stats(0), WindowStats { calls: 3, failures: 2, slow: 0 });
        w.record(SLOW, 0);
        assert_eq!(w.stats(0), WindowStats { calls: 3, failures: 1, slow: 1 });
        w.record(OK, 0);
        w.record(OK, 0);
        assert_eq!(w.stats(0), WindowStats { calls: 3, failures: 0, slow: 1 });
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn time_window_drops_old_seconds() {
        let mut w = Window::new(WindowKind::Time, 10);
        w.record(FAIL, 1_000);
        w.record(OK, 1_500);
        w.record(FAIL, 5_000);
        assert_eq!(w.stats(5_000), WindowStats { calls: 3, failures: 2, slow: 0 });
        // At t=11s the bucket of second 1 has left the 10 s window.
        assert_eq!(w.stats(11_000), WindowStats { calls: 1, failures: 1, slow: 0 });
        // Second 21 reuses bucket 1 and must not inherit its old counts.
        w.record(OK, 21_000);
        assert_eq!(w.stats(21_000), WindowStats { calls: 1, failures: 0, slow: 0 });
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn time_window_bucket_counts_overflow() {
        // Fuzz regression (fuzz/regressions/breaker_codec/time-window-bucket-counts-overflow):
        // decoded buckets near u32::MAX overflowed the sums (a panic in debug builds).
        let full = Bucket { second: 5, calls: u32::MAX, failures: u32::MAX, slow: 7 };
        let mut w = Window::Time(TimeWindow { buckets: vec![full, Bucket { second: 6, ..full }] });
        assert_eq!(w.stats(6_000), WindowStats { calls: u32::MAX, failures: u32::MAX, slow: 14 });
        w.record(FAIL, 6_500);
        assert_eq!(w.stats(6_000).calls, u32::MAX);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rates_are_percentages() {
        let st = WindowStats { calls: 4, failures: 1, slow: 2 };
        assert_eq!(st.failure_rate(), 25.0);
        assert_eq!(st.slow_rate(), 50.0);
        assert_eq!(WindowStats::default().failure_rate(), 0.0);
    }
}
