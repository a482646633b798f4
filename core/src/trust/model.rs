//! The trust arithmetic. Deterministic: the same evidence at the same time gives the same score.
//!
//! score = security × performance^w_p × reputation^w_r   (w_p + w_r = 1)
//!
//! - **performance**: beta reputation over decaying evidence. Successes and failures add to two
//!   counters that halve every `performance_half_life_ms` (10 minutes); slow calls count as half a failure.
//!   performance = (s + s0) / (s + f + s0 + f0), with an optimistic prior s0 = 4, f0 = 1 (0.8).
//! - **security**: a penalty that grows steeply by severity (low 0.02, medium 0.1, high 0.5,
//!   critical 2.0) and halves only every `security_half_life_ms` (a week): security = e^-penalty.
//! - **reputation**: ratings weighted by their rater's standing in a web of trust. Standing flows
//!   from pre-trusted raters (operators) through vouches, EigenTrust-style, so raters nobody
//!   trusted vouched for have almost none, however many they are; the unvouched crowd as a whole
//!   weighs at most `unknown_crowd_cap`, and a prior (0.5, weight 1) keeps any single rater from
//!   moving the score past halfway.
//!
//! A geometric mean, not an average: a server that fails every call, or was breached, must not
//! be rescued by good ratings.

use super::wire::{Breakdown, Outcomes, Severity, TrustState};
use std::collections::{BTreeMap, BTreeSet};

/// Parameters of the model (the aggregator's configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct TrustParams {
    pub performance_half_life_ms: u64,
    pub security_half_life_ms: u64,
    pub prior_successes: f64,
    pub prior_failures: f64,
    pub slow_weight: f64,
    /// Penalty per event by severity: low, medium, high, critical.
    pub severity_penalty: [f64; 4],
    pub performance_weight: f64,
    pub reputation_weight: f64,
    pub reputation_prior: f64,
    pub reputation_prior_weight: f64,
    pub unknown_rater_standing: f64,
    pub unknown_crowd_cap: f64,
    pub eigentrust_alpha: f64,
    pub eigentrust_iterations: u32,
    /// Under this score a server is `degraded`: sidecars treat it like an open breaker.
    pub min_trust: f64,
    /// Under this score the aggregator quarantines the server by itself.
    pub quarantine_below: f64,
}

impl Default for TrustParams {
    fn default() -> Self {
        TrustParams {
            performance_half_life_ms: 10 * 60 * 1000,
            security_half_life_ms: 7 * 24 * 3600 * 1000,
            prior_successes: 4.0,
            prior_failures: 1.0,
            slow_weight: 0.5,
            severity_penalty: [0.02, 0.1, 0.5, 2.0],
            performance_weight: 0.7,
            reputation_weight: 0.3,
            reputation_prior: 0.5,
            reputation_prior_weight: 1.0,
            unknown_rater_standing: 0.01,
            unknown_crowd_cap: 0.05,
            eigentrust_alpha: 0.15,
            eigentrust_iterations: 60,
            min_trust: 0.3,
            quarantine_below: 0.15,
        }
    }
}

fn decay(value: f64, from_ms: u64, to_ms: u64, half_life_ms: u64) -> f64 {
    if to_ms <= from_ms || half_life_ms == 0 {
        return value;
    }
    let halvings = (to_ms - from_ms) as f64 / half_life_ms as f64;
    value * 0.5f64.powf(halvings)
}

/// Decaying performance evidence of one server.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Evidence {
    pub successes: f64,
    pub failures: f64,
    pub updated_ms: u64,
}

impl Evidence {
    /// The evidence as it stands at `now_ms`.
    pub fn at(&self, now_ms: u64, p: &TrustParams) -> Evidence {
        Evidence {
            successes: decay(self.successes, self.updated_ms, now_ms, p.performance_half_life_ms),
            failures: decay(self.failures, self.updated_ms, now_ms, p.performance_half_life_ms),
            updated_ms: now_ms.max(self.updated_ms),
        }
    }

    /// Adds a period's outcomes observed at `now_ms`.
    pub fn add(&mut self, o: &Outcomes, now_ms: u64, p: &TrustParams) {
        *self = self.at(now_ms, p);
        let failures = o.failure_total() as f64;
        // Slow calls that did not fail count as half a failure and half a success.
        let slow_ok = (o.slow as f64).min(o.success as f64);
        self.successes += o.success as f64 - slow_ok * p.slow_weight;
        self.failures += failures + slow_ok * p.slow_weight;
    }

    /// The performance component in [0, 1].
    pub fn performance(&self, now_ms: u64, p: &TrustParams) -> f64 {
        let e = self.at(now_ms, p);
        (e.successes + p.prior_successes) / (e.successes + e.failures + p.prior_successes + p.prior_failures)
    }
}

/// Decaying security penalty of one server.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SecurityState {
    pub penalty: f64,
    pub updated_ms: u64,
}

impl SecurityState {
    pub fn penalty_at(&self, now_ms: u64, p: &TrustParams) -> f64 {
        decay(self.penalty, self.updated_ms, now_ms, p.security_half_life_ms)
    }

    pub fn add(&mut self, severity: Severity, now_ms: u64, p: &TrustParams) {
        let idx = match severity {
            Severity::Low => 0,
            Severity::Medium => 1,
            Severity::High => 2,
            Severity::Critical => 3,
        };
        self.penalty = self.penalty_at(now_ms, p) + p.severity_penalty.get(idx).copied().unwrap_or(0.0);
        self.updated_ms = now_ms.max(self.updated_ms);
    }

    /// The security component in (0, 1].
    pub fn security(&self, now_ms: u64, p: &TrustParams) -> f64 {
        (-self.penalty_at(now_ms, p)).exp()
    }
}

/// A vouch from one rater for another (0..1).
#[derive(Debug, Clone, PartialEq)]
pub struct Vouch {
    pub from: String,
    pub to: String,
    pub value: f64,
}

/// Each rater's standing in [0, 1]: pre-trusted raters 1, others by the EigenTrust mass that
/// reaches them from the pre-trusted through vouches (relative to the best pre-trusted rater),
/// raters nobody vouched for `unknown_rater_standing`.
///
/// Cost: O((names + vouches) · log names) to index, then O(names + vouches) per iteration
/// (`eigentrust_iterations` of them): the mass of raters without outgoing vouches is summed once
/// per iteration and handed back to the pre-trusted, never spread name by name.
pub fn rater_standing(pretrusted: &BTreeSet<String>, vouches: &[Vouch], p: &TrustParams) -> BTreeMap<String, f64> {
    let mut names: BTreeSet<&str> = pretrusted.iter().map(String::as_str).collect();
    for v in vouches {
        names.insert(&v.from);
        names.insert(&v.to);
    }
    let names: Vec<&str> = names.into_iter().collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let n = names.len();
    let mut standing = BTreeMap::new();
    if n == 0 || pretrusted.is_empty() {
        return standing;
    }
    let share = 1.0 / pretrusted.len() as f64;
    let pre_idx: Vec<usize> = pretrusted.iter().filter_map(|nm| index.get(nm.as_str()).copied()).collect();
    // Row-normalised outgoing vouches as one flat edge list; a rater with none hands its mass
    // back to the pre-trusted.
    let mut out_total = vec![0.0f64; n];
    let mut edges: Vec<(usize, usize, f64)> = Vec::with_capacity(vouches.len());
    for v in vouches {
        if let (Some(&i), Some(&j)) = (index.get(v.from.as_str()), index.get(v.to.as_str())) {
            if i != j && v.value > 0.0 {
                let w = v.value.min(1.0);
                edges.push((i, j, w));
                if let Some(t) = out_total.get_mut(i) {
                    *t += w;
                }
            }
        }
    }
    let mut t = vec![0.0f64; n];
    for &i in &pre_idx {
        if let Some(x) = t.get_mut(i) {
            *x = share;
        }
    }
    let mut next = vec![0.0f64; n];
    for _ in 0..p.eigentrust_iterations {
        next.iter_mut().for_each(|x| *x = 0.0);
        let mut dangling = 0.0;
        for (x, total) in t.iter().zip(&out_total) {
            if *total <= 0.0 {
                dangling += x;
            }
        }
        for &(i, j, w) in &edges {
            let from = t.get(i).copied().unwrap_or(0.0);
            let total = out_total.get(i).copied().unwrap_or(1.0);
            if let Some(x) = next.get_mut(j) {
                *x += (1.0 - p.eigentrust_alpha) * from * w / total;
            }
        }
        let back = (p.eigentrust_alpha + (1.0 - p.eigentrust_alpha) * dangling) * share;
        for &i in &pre_idx {
            if let Some(x) = next.get_mut(i) {
                *x += back;
            }
        }
        std::mem::swap(&mut t, &mut next);
    }
    let top = pre_idx.iter().filter_map(|&i| t.get(i).copied()).fold(0.0f64, f64::max);
    for (nm, x) in names.iter().zip(&t) {
        let s = if pretrusted.contains(*nm) {
            1.0
        } else if top > 0.0 {
            (x / top).min(1.0)
        } else {
            0.0
        };
        standing.insert((*nm).to_string(), s);
    }
    standing
}

/// The ratings of one server and the standing of their raters.
pub struct ReputationInput<'a> {
    /// (rater, value in 0..1), one per rater (the latest).
    pub ratings: &'a [(String, f64)],
    pub standing: &'a BTreeMap<String, f64>,
}

/// (reputation in [0, 1], total weight of the raters behind it).
pub fn reputation(input: &ReputationInput<'_>, p: &TrustParams) -> (f64, f64) {
    let mut known_weight = 0.0;
    let mut known_sum = 0.0;
    let mut crowd_weight = 0.0;
    let mut crowd_sum = 0.0;
    for (rater, value) in input.ratings {
        let value = value.clamp(0.0, 1.0);
        let standing = input.standing.get(rater).copied().unwrap_or(0.0);
        if standing > p.unknown_rater_standing {
            // No single rater weighs more than the prior itself.
            let w = standing.min(p.reputation_prior_weight);
            known_weight += w;
            known_sum += w * value;
        } else {
            crowd_weight += p.unknown_rater_standing;
            crowd_sum += p.unknown_rater_standing * value;
        }
    }
    // However many unvouched raters there are, together they weigh at most the crowd cap.
    if crowd_weight > p.unknown_crowd_cap {
        let scale = p.unknown_crowd_cap / crowd_weight;
        crowd_weight *= scale;
        crowd_sum *= scale;
    }
    let weight = known_weight + crowd_weight;
    let rep = (p.reputation_prior * p.reputation_prior_weight + known_sum + crowd_sum) / (p.reputation_prior_weight + weight);
    (rep.clamp(0.0, 1.0), weight)
}

/// A computed score with its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustScore {
    pub score: f64,
    pub breakdown: Breakdown,
}

/// Combines the three components at `now_ms`.
pub fn score(evidence: &Evidence, security: &SecurityState, reputation: (f64, f64), now_ms: u64, p: &TrustParams) -> TrustScore {
    let e = evidence.at(now_ms, p);
    let perf = evidence.performance(now_ms, p);
    let sec = security.security(now_ms, p);
    let (rep, rating_weight) = reputation;
    let value = (sec * perf.powf(p.performance_weight) * rep.powf(p.reputation_weight)).clamp(0.0, 1.0);
    let penalty = security.penalty_at(now_ms, p);
    let explanation = format!(
        "security {sec:.2} (penalty {penalty:.2}) x performance {perf:.2}^{pw} ({s:.0} ok / {f:.0} failed, decayed) x reputation {rep:.2}^{rw} (rater weight {rating_weight:.2})",
        pw = p.performance_weight,
        rw = p.reputation_weight,
        s = e.successes,
        f = e.failures,
    );
    TrustScore {
        score: value,
        breakdown: Breakdown {
            performance: perf,
            security: sec,
            reputation: rep,
            successes: e.successes,
            failures: e.failures,
            security_penalty: penalty,
            rating_weight,
            explanation,
        },
    }
}

/// The state the score and the operators' decisions put a server in.
pub fn state(score: f64, quarantined: bool, p: &TrustParams) -> TrustState {
    if quarantined {
        TrustState::Quarantined
    } else if score < p.min_trust {
        TrustState::Degraded
    } else {
        TrustState::Trusted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const MIN: u64 = 60_000;

    fn ok(n: u64) -> Outcomes {
        Outcomes { success: n, ..Default::default() }
    }
    fn failed(n: u64) -> Outcomes {
        let mut o = Outcomes::default();
        o.failures.insert("http_5xx".into(), n);
        o
    }

    fn no_ratings() -> (f64, f64) {
        let p = TrustParams::default();
        reputation(&ReputationInput { ratings: &[], standing: &BTreeMap::new() }, &p)
    }

    fn total(e: &Evidence, s: &SecurityState, now: u64) -> f64 {
        score(e, s, no_ratings(), now, &TrustParams::default()).score
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_new_server_starts_trusted_but_not_perfect() {
        let p = TrustParams::default();
        let s = total(&Evidence::default(), &SecurityState::default(), 0);
        assert!(s > p.min_trust && s < 0.8, "{s}");
        assert_eq!(state(s, false, &p), TrustState::Trusted);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn steady_good_server_rises() {
        let p = TrustParams::default();
        let mut e = Evidence::default();
        for minute in 0..60 {
            e.add(&ok(20), minute * MIN, &p);
        }
        let s = total(&e, &SecurityState::default(), 60 * MIN);
        assert!(s > 0.8, "{s}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn failing_server_falls_below_quarantine_then_recovers_with_time_and_success() {
        let p = TrustParams::default();
        let mut e = Evidence::default();
        for minute in 0..30 {
            e.add(&ok(20), minute * MIN, &p);
        }
        let sec = SecurityState::default();
        let (mut degraded_after, mut quarantined_after) = (None, None);
        for minute in 30..90 {
            e.add(&failed(20), minute * MIN, &p);
            let s = total(&e, &sec, minute * MIN);
            if degraded_after.is_none() && s < p.min_trust {
                degraded_after = Some(minute - 29);
            }
            if quarantined_after.is_none() && s < p.quarantine_below {
                quarantined_after = Some(minute - 29);
            }
        }
        // Breakers cut a failing server off in seconds on each sidecar; trust is the slower,
        // mesh-wide memory: degraded within ~20 minutes of total failure, quarantined within ~40.
        assert!(degraded_after.is_some_and(|m| m <= 25), "degraded after {degraded_after:?} min");
        assert!(quarantined_after.is_some_and(|m| m <= 45), "quarantined after {quarantined_after:?} min");
        // Recovery: healthy again for an hour.
        for minute in 90..150 {
            e.add(&ok(20), minute * MIN, &p);
        }
        assert!(total(&e, &sec, 150 * MIN) > 0.7);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn flapping_server_scores_below_a_steady_one() {
        let p = TrustParams::default();
        let (mut steady, mut flapping) = (Evidence::default(), Evidence::default());
        for minute in 0..60 {
            steady.add(&ok(20), minute * MIN, &p);
            let period = if minute % 2 == 0 { ok(20) } else { failed(20) };
            flapping.add(&period, minute * MIN, &p);
        }
        let sec = SecurityState::default();
        let (s, f) = (total(&steady, &sec, 60 * MIN), total(&flapping, &sec, 60 * MIN));
        assert!(f < s - 0.2, "steady {s}, flapping {f}");
        assert!(f > p.quarantine_below, "half failing is degraded, not quarantined: {f}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn sudden_breach_drops_the_score_at_once_and_recovers_slowly() {
        let p = TrustParams::default();
        let mut e = Evidence::default();
        for minute in 0..60 {
            e.add(&ok(20), minute * MIN, &p);
        }
        let mut sec = SecurityState::default();
        let before = total(&e, &sec, 60 * MIN);
        sec.add(Severity::Critical, 60 * MIN, &p);
        let after = total(&e, &sec, 60 * MIN);
        assert!(after < p.quarantine_below, "{before} -> {after}");
        // A day later, still far from where it was; a week later, halfway back in penalty.
        assert!(total(&e, &sec, 60 * MIN + 24 * 60 * MIN) < before / 2.0);
        let week = 60 * MIN + p.security_half_life_ms;
        assert!((sec.penalty_at(week, &p) - 1.0).abs() < 1e-9);
        // Severity is steep: ten low findings hurt less than one high.
        let mut lows = SecurityState::default();
        for _ in 0..10 {
            lows.add(Severity::Low, 0, &p);
        }
        let mut high = SecurityState::default();
        high.add(Severity::High, 0, &p);
        assert!(lows.security(0, &p) > high.security(0, &p));
    }

    /// How far a crowd of `n` unvouched raters rating 0 moves the score of a server with no
    /// other ratings, at the best possible security and performance (where it moves most).
    fn crowd_moves(n: usize, known: &[(String, f64)], standing: &BTreeMap<String, f64>, value: f64) -> f64 {
        let p = TrustParams::default();
        let mut ratings: Vec<(String, f64)> = known.to_vec();
        ratings.extend((0..n).map(|i| (format!("sybil-{i}"), value)));
        let best = Evidence { successes: 1e9, failures: 0.0, updated_ms: 0 };
        let sec = SecurityState::default();
        let before = score(&best, &sec, reputation(&ReputationInput { ratings: known, standing }, &p), 0, &p).score;
        let after = score(&best, &sec, reputation(&ReputationInput { ratings: &ratings, standing }, &p), 0, &p).score;
        (after - before).abs()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn sybil_crowd_moves_any_score_by_at_most_two_hundredths() {
        let p = TrustParams::default();
        let pre: BTreeSet<String> = ["ops".to_string()].into();
        // 100 fresh raters vouch for each other in a ring; nobody trusted vouches for them.
        let sybils: Vec<String> = (0..100).map(|i| format!("sybil-{i}")).collect();
        let vouches: Vec<Vouch> = sybils
            .iter()
            .enumerate()
            .map(|(i, s)| Vouch { from: s.clone(), to: sybils[(i + 1) % 100].clone(), value: 1.0 })
            .collect();
        let standing = rater_standing(&pre, &vouches, &p);
        assert!(sybils.iter().all(|s| standing[s] < 1e-9));
        for n in [100, 10_000] {
            let moved = crowd_moves(n, &[], &standing, 0.0);
            assert!(moved > 0.0 && moved <= 0.02, "{n} unvouched raters moved the score by {moved}");
            assert!(crowd_moves(n, &[], &standing, 1.0) <= 0.02);
        }
        // Where the score is steepest: trusted raters already pulled reputation down, and the
        // crowd pulls it back up (or the reverse).
        let mut standing = standing;
        for k in 0..4 {
            standing.insert(format!("known-{k}"), 1.0);
        }
        for k in 1..=4usize {
            for v in [0.0, 1.0] {
                let known: Vec<(String, f64)> = (0..k).map(|i| (format!("known-{i}"), v)).collect();
                for n in [100, 10_000] {
                    let moved = crowd_moves(n, &known, &standing, 1.0 - v);
                    assert!(moved <= 0.02, "{n} unvouched raters moved the score by {moved} past {k} known raters");
                }
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn vouched_raters_still_move_the_score_past_the_crowd() {
        let p = TrustParams::default();
        let pre: BTreeSet<String> = ["ops".to_string()].into();
        let vouches = vec![Vouch { from: "ops".into(), to: "alice".into(), value: 1.0 }];
        let standing = rater_standing(&pre, &vouches, &p);
        let alice = vec![("alice".to_string(), 0.0)];
        let best = Evidence { successes: 1e9, failures: 0.0, updated_ms: 0 };
        let sec = SecurityState::default();
        let none = score(&best, &sec, reputation(&ReputationInput { ratings: &[], standing: &standing }, &p), 0, &p).score;
        let one = score(&best, &sec, reputation(&ReputationInput { ratings: &alice, standing: &standing }, &p), 0, &p).score;
        assert!(none - one > 0.1, "a vouched rater moves the score by {}", none - one);
    }

    /// The dense formulation (every dangling rater spread over every name): the reference the
    /// O(edges) iteration must agree with.
    fn reference_standing(pretrusted: &BTreeSet<String>, vouches: &[Vouch], p: &TrustParams) -> BTreeMap<String, f64> {
        let mut names: BTreeSet<&str> = pretrusted.iter().map(String::as_str).collect();
        for v in vouches {
            names.insert(&v.from);
            names.insert(&v.to);
        }
        let names: Vec<&str> = names.into_iter().collect();
        let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let n = names.len();
        let pre: Vec<f64> =
            names.iter().map(|nm| if pretrusted.contains(*nm) { 1.0 / pretrusted.len() as f64 } else { 0.0 }).collect();
        let mut out: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
        for v in vouches {
            let (i, j) = (index[v.from.as_str()], index[v.to.as_str()]);
            if i != j && v.value > 0.0 {
                out[i].push((j, v.value.min(1.0)));
            }
        }
        let mut t = pre.clone();
        for _ in 0..p.eigentrust_iterations {
            let mut next: Vec<f64> = pre.iter().map(|x| p.eigentrust_alpha * x).collect();
            for (i, row) in out.iter().enumerate() {
                let mass = (1.0 - p.eigentrust_alpha) * t[i];
                let total: f64 = row.iter().map(|(_, w)| w).sum();
                if total > 0.0 {
                    for (j, w) in row {
                        next[*j] += mass * w / total;
                    }
                } else {
                    for (x, pj) in next.iter_mut().zip(&pre) {
                        *x += mass * pj;
                    }
                }
            }
            t = next;
        }
        let top = names.iter().zip(&t).filter(|(nm, _)| pretrusted.contains(**nm)).map(|(_, x)| *x).fold(0.0, f64::max);
        names
            .iter()
            .zip(&t)
            .map(|(nm, x)| (nm.to_string(), if pretrusted.contains(*nm) { 1.0 } else { (x / top).min(1.0) }))
            .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn standing_agrees_with_the_dense_formulation() {
        let p = TrustParams::default();
        let pre: BTreeSet<String> = ["ops".to_string(), "sec".to_string()].into();
        // A small pseudo-random graph: chains, a ring, dangling raters, weak and withdrawn vouches.
        let mut vouches = Vec::new();
        let mut x: u64 = 7;
        for _ in 0..120 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let from = if x.is_multiple_of(7) { "ops".to_string() } else { format!("r{}", (x >> 8) % 30) };
            let to = if x.is_multiple_of(11) { "sec".to_string() } else { format!("r{}", (x >> 20) % 30) };
            let value = ((x >> 40) % 5) as f64 / 4.0;
            vouches.push(Vouch { from, to, value });
        }
        let fast = rater_standing(&pre, &vouches, &p);
        let dense = reference_standing(&pre, &vouches, &p);
        assert_eq!(fast.len(), dense.len());
        for (name, s) in &dense {
            assert!((fast[name] - s).abs() < 1e-9, "{name}: {} against {s}", fast[name]);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn standing_of_thirty_thousand_dangling_names_is_linear() {
        // The vouch flood: one rater vouching for 30,000 invented names (each of them dangling).
        // The dense formulation spreads each dangling name over every name on each of the 60
        // iterations (5.4e10 steps here); this one is a few million.
        let p = TrustParams::default();
        let pre: BTreeSet<String> = ["ops".to_string()].into();
        let mut vouches = vec![Vouch { from: "ops".into(), to: "mallory".into(), value: 1.0 }];
        vouches.extend((0..30_000).map(|i| Vouch { from: "mallory".into(), to: format!("n{i}"), value: 1.0 }));
        let standing = rater_standing(&pre, &vouches, &p);
        assert_eq!(standing.len(), 30_002);
        assert!(standing["mallory"] > 0.5);
        assert!(standing["n0"] < 0.001, "{}", standing["n0"]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn vouched_raters_gain_standing_and_no_single_rater_dominates() {
        let p = TrustParams::default();
        let pre: BTreeSet<String> = ["ops".to_string()].into();
        let vouches = vec![Vouch { from: "ops".into(), to: "alice".into(), value: 1.0 }];
        let standing = rater_standing(&pre, &vouches, &p);
        assert_eq!(standing["ops"], 1.0);
        assert!(standing["alice"] > 0.5, "{standing:?}");
        let one = vec![("ops".to_string(), 0.0)];
        let (rep, _) = reputation(&ReputationInput { ratings: &one, standing: &standing }, &p);
        assert!((rep - 0.25).abs() < 1e-9, "one operator moves reputation halfway at most: {rep}");
        let two = vec![("ops".to_string(), 0.0), ("alice".to_string(), 0.0)];
        let (rep2, _) = reputation(&ReputationInput { ratings: &two, standing: &standing }, &p);
        assert!(rep2 < rep);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn deterministic() {
        let p = TrustParams::default();
        let pre: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let vouches = vec![
            Vouch { from: "a".into(), to: "c".into(), value: 0.8 },
            Vouch { from: "c".into(), to: "d".into(), value: 1.0 },
            Vouch { from: "b".into(), to: "d".into(), value: 0.3 },
        ];
        assert_eq!(rater_standing(&pre, &vouches, &p), rater_standing(&pre, &vouches, &p));
    }
}
