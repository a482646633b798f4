//! The byte layout of a breaker in shared data: small, fixed per policy, versioned.
//!
//! Decoding never trusts its input: a value that is short, from another version or out of range
//! is refused, and the caller starts a fresh closed breaker instead.

use super::machine::{BreakerState, Phase};
use super::policy::{MAX_COUNT_WINDOW, MAX_TIME_WINDOW_S};
use super::window::{Bucket, CountWindow, TimeWindow, Window};

const VERSION: u8 = 1;

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

/// Serialises a breaker.
pub fn encode(state: &BreakerState, out: &mut Vec<u8>) {
    out.clear();
    out.push(VERSION);
    let (tag, t, in_flight, successes) = match state.phase {
        Phase::Closed => (0u8, 0u64, 0u32, 0u32),
        Phase::Open { until_ms } => (1, until_ms, 0, 0),
        Phase::HalfOpen { since_ms, in_flight, successes } => (2, since_ms, in_flight, successes),
    };
    out.push(tag);
    out.extend_from_slice(&t.to_le_bytes());
    out.extend_from_slice(&in_flight.to_le_bytes());
    out.extend_from_slice(&successes.to_le_bytes());
    out.extend_from_slice(&state.epoch.to_le_bytes());
    out.extend_from_slice(&state.trips.to_le_bytes());
    out.extend_from_slice(&state.closed_since_ms.to_le_bytes());
    out.extend_from_slice(&state.consecutive_failures.to_le_bytes());
    match &state.window {
        Window::Count(w) => {
            out.push(0);
            out.extend_from_slice(&(w.slots.len() as u32).to_le_bytes());
            out.extend_from_slice(&w.head.to_le_bytes());
            out.extend_from_slice(&w.len.to_le_bytes());
            out.extend_from_slice(&w.slots);
        }
        Window::Time(w) => {
            out.push(1);
            out.extend_from_slice(&(w.buckets.len() as u32).to_le_bytes());
            for b in &w.buckets {
                for v in [b.second, b.calls, b.failures, b.slow] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Reads a breaker back.
pub fn decode(bytes: &[u8]) -> Result<BreakerState, DecodeError> {
    let mut r = Reader { buf: bytes };
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown version"));
    }
    let tag = r.u8()?;
    let t = r.u64()?;
    let in_flight = r.u32()?;
    let successes = r.u32()?;
    // Fields a phase does not use are written as zeros; anything else was not written by
    // `encode`, and accepting it would make one state have several encodings.
    let phase = match tag {
        0 if (t, in_flight, successes) == (0, 0, 0) => Phase::Closed,
        1 if (in_flight, successes) == (0, 0) => Phase::Open { until_ms: t },
        2 => Phase::HalfOpen { since_ms: t, in_flight, successes },
        0 | 1 => return Err(DecodeError("fields unused by the phase are set")),
        _ => return Err(DecodeError("unknown phase")),
    };
    let epoch = r.u32()?;
    let trips = r.u32()?;
    let closed_since_ms = r.u64()?;
    let consecutive_failures = r.u32()?;
    let window = match r.u8()? {
        0 => {
            let size = r.u32()?;
            if size == 0 || size > MAX_COUNT_WINDOW {
                return Err(DecodeError("count window size out of range"));
            }
            let head = r.u32()?;
            let len = r.u32()?;
            if head >= size || len > size {
                return Err(DecodeError("count window cursor out of range"));
            }
            let slots = r.take(size as usize)?.to_vec();
            Window::Count(CountWindow { slots, head, len })
        }
        1 => {
            let size = r.u32()?;
            if size == 0 || size > MAX_TIME_WINDOW_S {
                return Err(DecodeError("time window size out of range"));
            }
            let mut buckets = Vec::with_capacity(size as usize);
            for _ in 0..size {
                buckets.push(Bucket { second: r.u32()?, calls: r.u32()?, failures: r.u32()?, slow: r.u32()? });
            }
            Window::Time(TimeWindow { buckets })
        }
        _ => return Err(DecodeError("unknown window type")),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(BreakerState { phase, epoch, trips, closed_since_ms, consecutive_failures, window })
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;
    use crate::breaker::policy::{BreakerPolicy, WindowKind};
    use crate::breaker::machine::CallRecord;

    fn roundtrip(s: &BreakerState) {
        let mut buf = Vec::new();
        encode(s, &mut buf);
        assert_eq!(&decode(&buf).unwrap(), s);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn roundtrips_every_phase_and_window() {
        for kind in [WindowKind::Count, WindowKind::Time] {
            let p = BreakerPolicy { window_kind: kind, ..Default::default() };
            let mut s = BreakerState::new(&p, 1234);
            roundtrip(&s);
            for i in 0..7 {
                s.record(&p, CallRecord { failed: i % 2 == 0, slow: i == 3, probe: false, epoch: 0 }, 5000 + i);
            }
            roundtrip(&s);
            s.phase = Phase::Open { until_ms: 99 };
            roundtrip(&s);
            s.phase = Phase::HalfOpen { since_ms: 7, in_flight: 2, successes: 1 };
            roundtrip(&s);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn closed_phase_with_probe_counts() {
        // Fuzz regression (fuzz/regressions/breaker_codec/closed-phase-with-probe-counts): a
        // closed (or open) breaker with half-open counters set decoded, so encode(decode(x)) != x.
        let p = BreakerPolicy { window_size: 3, minimum_calls: 3, ..Default::default() };
        let mut buf = Vec::new();
        encode(&BreakerState::new(&p, 5), &mut buf);
        for (at, phase) in [(2, 0u8), (10, 0), (14, 0), (10, 1), (14, 1)] {
            let mut bad = buf.clone();
            bad[1] = phase;
            bad[at] = 54;
            assert!(decode(&bad).is_err(), "byte {at} set in phase {phase}");
        }
        let mut open = buf.clone();
        open[1] = 1;
        open[2] = 54;
        assert_eq!(decode(&open).unwrap().phase, Phase::Open { until_ms: 54 });
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_every_truncation_and_garbage() {
        let p = BreakerPolicy::default();
        let mut buf = Vec::new();
        encode(&BreakerState::new(&p, 1), &mut buf);
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err(), "prefix of {n} bytes accepted");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut bad_version = buf.clone();
        bad_version[0] = 9;
        assert!(decode(&bad_version).is_err());
        assert!(decode(b"not a breaker at all, just text").is_err());
    }
}
