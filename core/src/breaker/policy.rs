//! Validated breaker parameters. Built once from the plugin configuration.

use std::fmt;

/// How the sliding window over recent calls is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `size` calls.
    Count,
    /// The calls of the last `size` seconds (one bucket per second).
    Time,
}

/// Largest count window (calls) and time window (seconds) accepted.
pub const MAX_COUNT_WINDOW: u32 = 1000;
/// Largest time window in seconds.
pub const MAX_TIME_WINDOW_S: u32 = 600;

/// Breaker parameters; see the README's configuration reference for the meaning of each.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub window_kind: WindowKind,
    pub window_size: u32,
    pub minimum_calls: u32,
    pub failure_rate_threshold: f64,
    pub slow_call_rate_threshold: f64,
    pub slow_call_duration_ms: u64,
    pub consecutive_failures: u32,
    pub open_duration_ms: u64,
    pub open_duration_max_ms: u64,
    pub backoff_multiplier: f64,
    pub backoff_reset_ms: u64,
    pub half_open_probes: u32,
    pub half_open_probe_timeout_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            window_kind: WindowKind::Count,
            window_size: 20,
            minimum_calls: 10,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_ms: 10_000,
            consecutive_failures: 5,
            open_duration_ms: 10_000,
            open_duration_max_ms: 300_000,
            backoff_multiplier: 2.0,
            backoff_reset_ms: 120_000,
            half_open_probes: 3,
            half_open_probe_timeout_ms: 30_000,
        }
    }
}

/// A policy value that makes no sense, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for InvalidPolicy {}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy { field, message: message.into() }
}

impl BreakerPolicy {
    /// Checks every field and their relations; the only way a policy reaches the state machine.
    pub fn validate(self) -> Result<Self, InvalidPolicy> {
        let max_window = match self.window_kind {
            WindowKind::Count => MAX_COUNT_WINDOW,
            WindowKind::Time => MAX_TIME_WINDOW_S,
        };
        if self.window_size == 0 || self.window_size > max_window {
            return Err(invalid(
                "window_size",
                format!("must be between 1 and {max_window} for this window type, got {}", self.window_size),
            ));
        }
        if self.minimum_calls == 0 {
            return Err(invalid("minimum_calls", "must be at least 1"));
        }
        if self.window_kind == WindowKind::Count && self.minimum_calls > self.window_size {
            return Err(invalid(
                "minimum_calls",
                format!(
                    "must not exceed window_size ({}) for a count window, or the rate is never evaluated",
                    self.window_size
                ),
            ));
        }
        for (field, v) in [
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("slow_call_rate_threshold", self.slow_call_rate_threshold),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return Err(invalid(field, format!("must be a percentage in (0, 100], got {v}")));
            }
        }
        if self.slow_call_duration_ms == 0 {
            return Err(invalid("slow_call_duration_ms", "must be at least 1"));
        }
        if self.open_duration_ms == 0 {
            return Err(invalid("open_duration_ms", "must be at least 1"));
        }
        if self.open_duration_max_ms < self.open_duration_ms {
            return Err(invalid("open_duration_max_ms", "must not be less than open_duration_ms"));
        }
        if !(1.0..=10.0).contains(&self.backoff_multiplier) {
            return Err(invalid(
                "backoff_multiplier",
                format!("must be between 1.0 (no backoff) and 10.0, got {}", self.backoff_multiplier),
            ));
        }
        if self.half_open_probes == 0 || self.half_open_probes > 100 {
            return Err(invalid("half_open_probes", "must be between 1 and 100"));
        }
        if self.half_open_probe_timeout_ms == 0 {
            return Err(invalid("half_open_probe_timeout_ms", "must be at least 1"));
        }
        Ok(self)
    }

    /// How long the breaker stays open after its `trips`-th consecutive trip (0-based).
    pub fn open_duration(&self, trips: u32) -> u64 {
        let factor = self.backoff_multiplier.powi(trips.min(64) as i32);
        let ms = (self.open_duration_ms as f64) * factor;
        if ms.is_finite() && ms < self.open_duration_max_ms as f64 {
            ms as u64
        } else {
            self.open_duration_max_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;

    #[wasm_bindgen_test(unsupported = test)]
    fn defaults_are_valid() {
        assert!(BreakerPolicy::default().validate().is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_inverted_open_durations() {
        let p = BreakerPolicy { open_duration_max_ms: 5, ..BreakerPolicy::default() };
        assert_eq!(p.validate().unwrap_err().field, "open_duration_max_ms");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_out_of_range_values() {
        let cases: Vec<(BreakerPolicy, &str)> = vec![
            (BreakerPolicy { window_size: 0, ..Default::default() }, "window_size"),
            (BreakerPolicy { window_size: 1001, ..Default::default() }, "window_size"),
            (
                BreakerPolicy { window_kind: WindowKind::Time, window_size: 601, ..Default::default() },
                "window_size",
            ),
            (BreakerPolicy { minimum_calls: 0, ..Default::default() }, "minimum_calls"),
            (BreakerPolicy { minimum_calls: 21, ..Default::default() }, "minimum_calls"),
            (BreakerPolicy { failure_rate_threshold: 0.0, ..Default::default() }, "failure_rate_threshold"),
            (BreakerPolicy { failure_rate_threshold: f64::NAN, ..Default::default() }, "failure_rate_threshold"),
            (BreakerPolicy { slow_call_rate_threshold: 101.0, ..Default::default() }, "slow_call_rate_threshold"),
            (BreakerPolicy { backoff_multiplier: 0.5, ..Default::default() }, "backoff_multiplier"),
            (BreakerPolicy { half_open_probes: 0, ..Default::default() }, "half_open_probes"),
            (BreakerPolicy { open_duration_ms: 0, ..Default::default() }, "open_duration_ms"),
        ];
        for (policy, field) in cases {
            assert_eq!(policy.validate().unwrap_err().field, field);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn open_duration_backs_off_and_caps() {
        let p = BreakerPolicy::default();
        assert_eq!(p.open_duration(0), 10_000);
        assert_eq!(p.open_duration(1), 20_000);
        assert_eq!(p.open_duration(3), 80_000);
        assert_eq!(p.open_duration(10), 300_000);
        assert_eq!(p.open_duration(u32::MAX), 300_000);
    }
}
