//! The `inspection` block of the plugin configuration: read with unknown fields refused, merged
//! with the built-in rule set, validated and compiled once into an [`Inspector`]. Every error
//! names its field, as in the rest of the configuration.

use super::rules::{compile_pattern, compile_substring, default_rule_set, FieldClass, RuleDef, RuleKind};
use super::text::Matcher;
use super::detect::{Detector, Thresholds};
use super::{Action, Inspector, Limits, Rule};
use crate::reader::{self as read, ConfigError, Val};
use crate::severity::Severity;
use std::collections::HashSet;

/// What the operator writes (every field optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InspectionConfig {
    pub enabled: Option<bool>,
    /// Overrides of built-in rules (same id) and extra phrase rules (new id).
    pub rules: Vec<RuleDef>,
    pub policy: PolicyConfig,
    pub max_description_chars: Option<u64>,
    pub max_list_bytes: Option<u64>,
    pub max_result_bytes: Option<u64>,
    pub max_pins_per_server: Option<u64>,
    pub evidence_max_chars: Option<u64>,
    pub inspect_results: Option<bool>,
    /// The per-tool evidence score (docs/SECURITY.md, "Detection").
    pub detector: DetectorConfig,
    /// What a changed tool definition (a rug pull) gets, by default and per server.
    pub rug_pull: RugPullConfig,
}

/// The `detector` block: on by default, with the trained thresholds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorConfig {
    pub enabled: Option<bool>,
    /// Scores (log-odds) from which a tool is recorded, stripped, quarantined.
    pub record: Option<f32>,
    pub strip: Option<f32>,
    pub quarantine: Option<f32>,
}

/// What happens to a tool whose definition changed since it was pinned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PinPolicy {
    /// Report the change, forward the new definition (and pin it).
    Record,
    /// Keep the tool out of `tools/list` until its new fingerprint is cleared: scanned clean with
    /// no new capability, or approved by an operator.
    #[default]
    Hold,
    /// Keep the tool out until an operator approves the new fingerprint, whatever the scan says.
    Block,
}

/// The `rug_pull` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RugPullConfig {
    pub default: Option<PinPolicy>,
    /// Per server name (each name once), in document order.
    pub servers: Vec<(String, PinPolicy)>,
}

/// The action per severity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyConfig {
    pub low: Option<Action>,
    pub medium: Option<Action>,
    pub high: Option<Action>,
    pub critical: Option<Action>,
}

/// The names operators write for severities and actions.
pub(crate) const SEVERITIES: [(&str, Severity); 4] =
    [("low", Severity::Low), ("medium", Severity::Medium), ("high", Severity::High), ("critical", Severity::Critical)];
const ACTIONS: [(&str, Action); 4] =
    [("record", Action::Record), ("strip", Action::Strip), ("block", Action::Block), ("quarantine", Action::Quarantine)];
const PIN_POLICIES: [(&str, PinPolicy); 3] = [("record", PinPolicy::Record), ("hold", PinPolicy::Hold), ("block", PinPolicy::Block)];

impl InspectionConfig {
    /// Reads the block (see [`crate::reader`]).
    pub fn read(v: &Val) -> Result<Self, ConfigError> {
        let o = v.object(&[
            "enabled", "rules", "policy", "max_description_chars", "max_list_bytes", "max_result_bytes",
            "max_pins_per_server", "evidence_max_chars", "inspect_results", "detector", "rug_pull",
        ])?;
        Ok(InspectionConfig {
            enabled: o.opt("enabled", Val::bool)?,
            rules: o.opt("rules", |l| l.list(RuleDef::read))?.unwrap_or_default(),
            policy: o.opt("policy", PolicyConfig::read)?.unwrap_or_default(),
            max_description_chars: o.opt("max_description_chars", Val::u64)?,
            max_list_bytes: o.opt("max_list_bytes", Val::u64)?,
            max_result_bytes: o.opt("max_result_bytes", Val::u64)?,
            max_pins_per_server: o.opt("max_pins_per_server", Val::u64)?,
            evidence_max_chars: o.opt("evidence_max_chars", Val::u64)?,
            inspect_results: o.opt("inspect_results", Val::bool)?,
            detector: o.opt("detector", DetectorConfig::read)?.unwrap_or_default(),
            rug_pull: o.opt("rug_pull", RugPullConfig::read)?.unwrap_or_default(),
        })
    }

    /// Parses a standalone `inspection` document (fields named from its root).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::read(&Val::root(&read::parse(bytes)?))
    }
}

impl DetectorConfig {
    fn read(v: &Val) -> Result<Self, ConfigError> {
        let o = v.object(&["enabled", "record", "strip", "quarantine"])?;
        // As f32 (the model's precision); an out-of-range value is refused at compile.
        let score = |v: &Val| v.f64().map(|x| x as f32);
        Ok(DetectorConfig {
            enabled: o.opt("enabled", Val::bool)?,
            record: o.opt("record", score)?,
            strip: o.opt("strip", score)?,
            quarantine: o.opt("quarantine", score)?,
        })
    }
}

impl RugPullConfig {
    fn read(v: &Val) -> Result<Self, ConfigError> {
        let o = v.object(&["default", "servers"])?;
        let servers = match o.get("servers") {
            None => Default::default(),
            Some(m) => m.map()?.into_iter().map(|(k, p)| Ok((k.to_string(), p.choice(&PIN_POLICIES)?))).collect::<Result<_, ConfigError>>()?,
        };
        Ok(RugPullConfig { default: o.opt("default", |p| p.choice(&PIN_POLICIES))?, servers })
    }
}

impl PolicyConfig {
    fn read(v: &Val) -> Result<Self, ConfigError> {
        let o = v.object(&["low", "medium", "high", "critical"])?;
        let action = |a: &Val| a.choice(&ACTIONS);
        Ok(PolicyConfig {
            low: o.opt("low", action)?,
            medium: o.opt("medium", action)?,
            high: o.opt("high", action)?,
            critical: o.opt("critical", action)?,
        })
    }
}

/// Defaults: record what is doubtful, strip what is clearly poisoned, quarantine what has no
/// innocent explanation (see docs/SECURITY.md).
pub const DEFAULT_POLICY: [Action; 4] = [Action::Record, Action::Record, Action::Strip, Action::Quarantine];
pub const DEFAULT_MAX_DESCRIPTION_CHARS: usize = 4096;
/// Held list answers must stay under Envoy's buffer limit (1 MiB by default).
pub const DEFAULT_MAX_LIST_BYTES: usize = 512 << 10;
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1 << 20;
pub const DEFAULT_MAX_PINS_PER_SERVER: usize = 1024;
pub const DEFAULT_EVIDENCE_MAX_CHARS: usize = 160;

fn err(at: &str, field: impl AsRef<str>, message: impl Into<String>) -> ConfigError {
    let field = field.as_ref();
    let field = match (at.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => at.to_string(),
        (false, false) if field.starts_with('[') => format!("{at}{field}"),
        (false, false) => format!("{at}.{field}"),
    };
    ConfigError { field, message: message.into() }
}

fn ranged(at: &str, field: &str, v: Option<u64>, default: usize, lo: u64, hi: u64) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(&n) => Ok(n as usize),
        Some(n) => Err(err(at, field, format!("must be between {lo} and {hi}, got {n}"))),
    }
}

fn check_rule_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("a rule id is 1 to 64 characters".into());
    }
    if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'/' | b'-' | b'_' | b'.')) {
        return Err(format!("`{id}` may only hold lowercase letters, digits, `/`, `-`, `_` and `.`"));
    }
    Ok(())
}

impl InspectionConfig {
    /// Validates and compiles; errors name fields under `at` (e.g. `inspection.rules[2].severity`).
    pub fn compile(&self, at: &str) -> Result<Inspector, ConfigError> {
        let builtin = default_rule_set().map_err(|m| err(at, "", m))?;
        let mut defs: Vec<RuleDef> = builtin.rules;
        let mut changed = false;
        let mut seen = HashSet::new();
        for (i, o) in self.rules.iter().enumerate() {
            let f = |name: &str| format!("rules[{i}].{name}");
            check_rule_id(&o.id).map_err(|m| err(at, f("id"), m))?;
            if !seen.insert(o.id.as_str()) {
                return Err(err(at, f("id"), format!("rule `{}` is configured twice", o.id)));
            }
            changed = true;
            match defs.iter_mut().find(|d| d.id == o.id) {
                Some(d) => {
                    if o.kind.is_some() && o.kind != d.kind {
                        return Err(err(at, f("kind"), format!("rule `{}` is built in; its kind cannot change", o.id)));
                    }
                    if o.severity.is_some() {
                        d.severity = o.severity;
                    }
                    if o.result_severity.is_some() {
                        d.result_severity = o.result_severity;
                    }
                    if o.apply_to_results == Some(false) {
                        d.result_severity = None;
                    }
                    if o.enabled.is_some() {
                        d.enabled = o.enabled;
                    }
                    if o.fields.is_some() {
                        d.fields.clone_from(&o.fields);
                    }
                    if o.min_len.is_some() {
                        d.min_len = o.min_len;
                    }
                    d.patterns.extend(o.patterns.iter().cloned());
                    d.substrings.extend(o.substrings.iter().cloned());
                }
                None => {
                    if o.kind.is_some_and(|k| k != RuleKind::Phrase) {
                        return Err(err(at, f("kind"), "a rule that is not built in must be of kind `phrase`"));
                    }
                    if o.severity.is_none() {
                        return Err(err(at, f("severity"), format!("a new rule (`{}` is not built in) needs a severity", o.id)));
                    }
                    if o.patterns.is_empty() && o.substrings.is_empty() {
                        return Err(err(at, f("patterns"), "a new rule needs patterns or substrings"));
                    }
                    let mut d = o.clone();
                    d.kind = Some(RuleKind::Phrase);
                    if d.apply_to_results == Some(false) {
                        d.result_severity = None;
                    }
                    defs.push(d);
                }
            }
        }

        let mut rules = Vec::with_capacity(defs.len());
        let mut matcher = Matcher::default();
        for (idx, d) in defs.iter().enumerate() {
            // Errors in built-in rules name the rule; in operator entries, their index.
            let op = self.rules.iter().position(|o| o.id == d.id);
            let f = |name: &str| match op {
                Some(i) => format!("rules[{i}].{name}"),
                None => format!("rules.{}.{name}", d.id),
            };
            let kind = d.kind.unwrap_or(RuleKind::Phrase);
            let severity = d.severity.ok_or_else(|| err(at, f("severity"), "missing"))?;
            if kind != RuleKind::Phrase && (!d.patterns.is_empty() || !d.substrings.is_empty()) {
                return Err(err(at, f("patterns"), "only phrase rules have patterns or substrings"));
            }
            if kind != RuleKind::Phrase && d.fields.is_some() {
                return Err(err(at, f("fields"), "only phrase rules read chosen fields"));
            }
            let fields = match &d.fields {
                None => 0xff,
                Some(list) if list.is_empty() => return Err(err(at, f("fields"), "name at least one field")),
                Some(list) => list.iter().fold(0u8, |acc, c: &FieldClass| acc | c.bit()),
            };
            let min_len = match (kind, d.min_len) {
                (RuleKind::Base64, Some(n)) if (16..=4096).contains(&n) => n,
                (RuleKind::Base64, Some(n)) => return Err(err(at, f("min_len"), format!("must be between 16 and 4096, got {n}"))),
                (RuleKind::Base64, None) => 60,
                (_, Some(_)) => return Err(err(at, f("min_len"), "only base64 rules have a min_len")),
                (_, None) => 0,
            };
            if kind == RuleKind::Protocol && !super::protocol::RULE_IDS.contains(&d.id.as_str()) {
                return Err(err(at, f("kind"), format!("unknown protocol rule `{}`", d.id)));
            }
            for (j, p) in d.patterns.iter().enumerate() {
                let pat = compile_pattern(idx, p).map_err(|m| err(at, f(&format!("patterns[{j}]")), m))?;
                matcher.add_pattern(pat);
            }
            for (j, s) in d.substrings.iter().enumerate() {
                let s = compile_substring(s).map_err(|m| err(at, f(&format!("substrings[{j}]")), m))?;
                matcher.add_substring(idx, s);
            }
            rules.push(Rule {
                id: d.id.clone(),
                kind,
                severity,
                result_severity: d.result_severity,
                enabled: d.enabled.unwrap_or(true),
                fields,
                min_len,
                decisive: op.is_some_and(|i| self.rules.get(i).is_some_and(|o| o.severity.is_some() || o.result_severity.is_some())),
            });
        }

        let p = &self.policy;
        let policy = [
            p.low.unwrap_or(DEFAULT_POLICY[0]),
            p.medium.unwrap_or(DEFAULT_POLICY[1]),
            p.high.unwrap_or(DEFAULT_POLICY[2]),
            p.critical.unwrap_or(DEFAULT_POLICY[3]),
        ];
        for (w, name) in policy.windows(2).zip(["medium", "high", "critical"]) {
            if let [lower, higher] = w {
                if higher < lower {
                    return Err(err(
                        at,
                        format!("policy.{name}"),
                        format!("`{}` is milder than the action for a lower severity (`{}`)", higher.as_str(), lower.as_str()),
                    ));
                }
            }
        }
        let limits = Limits {
            max_description_chars: ranged(at, "max_description_chars", self.max_description_chars, DEFAULT_MAX_DESCRIPTION_CHARS, 64, 1_000_000)?,
            max_list_bytes: ranged(at, "max_list_bytes", self.max_list_bytes, DEFAULT_MAX_LIST_BYTES, 1024, 64 << 20)?,
            max_result_bytes: ranged(at, "max_result_bytes", self.max_result_bytes, DEFAULT_MAX_RESULT_BYTES, 1024, 64 << 20)?,
            max_pins_per_server: ranged(at, "max_pins_per_server", self.max_pins_per_server, DEFAULT_MAX_PINS_PER_SERVER, 1, 65_535)?,
            evidence_max_chars: ranged(at, "evidence_max_chars", self.evidence_max_chars, DEFAULT_EVIDENCE_MAX_CHARS, 16, 4096)?,
            inspect_results: self.inspect_results.unwrap_or(true),
        };
        let version = if changed { format!("{}+local", builtin.version) } else { builtin.version };
        let detector = if self.detector.enabled.unwrap_or(true) {
            let d = Detector::builtin();
            let t = Thresholds {
                record: self.detector.record.unwrap_or(d.thresholds.record),
                strip: self.detector.strip.unwrap_or(d.thresholds.strip),
                quarantine: self.detector.quarantine.unwrap_or(d.thresholds.quarantine),
            };
            for (name, v) in [("record", t.record), ("strip", t.strip), ("quarantine", t.quarantine)] {
                if !v.is_finite() || !(-50.0..=50.0).contains(&v) {
                    return Err(err(at, format!("detector.{name}"), format!("must be a number between -50 and 50, got {v}")));
                }
            }
            if !(t.record <= t.strip && t.strip <= t.quarantine) {
                return Err(err(at, "detector", "thresholds must satisfy record <= strip <= quarantine"));
            }
            Some(std::sync::Arc::new(d.with_thresholds(t)))
        } else {
            None
        };
        for (name, _) in &self.rug_pull.servers {
            if name.is_empty() || name.len() > 256 {
                return Err(err(at, "rug_pull.servers", "a server name is 1 to 256 characters"));
            }
        }
        let mut per_server = self.rug_pull.servers.clone();
        per_server.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let rug_pull = (self.rug_pull.default.unwrap_or_default(), per_server);
        Ok(Inspector { enabled: self.enabled.unwrap_or(true), limits, version, rules, matcher, policy, detector, rug_pull })
    }
}

impl Inspector {
    /// Parses and compiles a standalone `inspection` document (fields named from its root).
    pub fn from_json(bytes: &[u8]) -> Result<Inspector, ConfigError> {
        InspectionConfig::from_json(bytes)?.compile("")
    }

    /// The built-in rule set with the default limits and policy.
    pub fn builtin() -> Inspector {
        match InspectionConfig::default().compile("") {
            Ok(i) => i,
            // The built-in set is checked by tests; should it ever fail, inspect nothing rather
            // than panic on the data path.
            Err(_) => Inspector {
                enabled: false,
                limits: Limits {
                    max_description_chars: DEFAULT_MAX_DESCRIPTION_CHARS,
                    max_list_bytes: DEFAULT_MAX_LIST_BYTES,
                    max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
                    max_pins_per_server: DEFAULT_MAX_PINS_PER_SERVER,
                    evidence_max_chars: DEFAULT_EVIDENCE_MAX_CHARS,
                    inspect_results: false,
                },
                version: String::new(),
                rules: Vec::new(),
                matcher: Matcher::default(),
                policy: DEFAULT_POLICY,
                detector: None,
                rug_pull: (PinPolicy::Record, Vec::new()),
            },
        }
    }
}
