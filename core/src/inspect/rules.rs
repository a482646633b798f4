//! The rule set as data: the built-in rules (`default_rules.json`, versioned) and the patterns
//! they hold, compiled once into word-slot sequences and literal substrings.
//!
//! Pattern syntax (one string per pattern, matched on normalized text, see [`super::text`]):
//! words separated by spaces; each word is a slot of alternatives `a|b|c`, an alternative ending
//! in `*` matches by prefix, `@url` matches `http://` / `https://`, `@email` a word followed by
//! `@domain`, `@number` a run of 7 or more digits; `~N` between two slots lets up to N other words
//! sit between them (default 0). Words are runs of letters and digits: `send_email` reads as
//! `send email`, `don't` as `dont`. Substrings are literal, lowercase, with word boundaries at
//! their alphanumeric ends.

use crate::reader::{self as read, ConfigError, Val};
use crate::severity::Severity;

/// The built-in rule set.
pub const DEFAULT_RULES_JSON: &str = include_str!("default_rules.json");

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Word patterns and substrings over normalized text.
    Phrase,
    /// Zero-width characters.
    Invisible,
    /// Bidirectional controls.
    Bidi,
    /// Unicode tag characters (their hidden ASCII is decoded and checked).
    TagChars,
    /// Descriptions longer than `max_description_chars`.
    Length,
    /// Long base64 runs (decoded and checked).
    Base64,
    /// A tool definition changed since it was pinned.
    Pin,
    /// The same tool name on several servers.
    Shadowing,
    /// JSON-RPC protocol violations (fixed ids `protocol/...`).
    Protocol,
}

/// Which part of a definition a phrase rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldClass {
    Name,
    Title,
    Description,
    /// `inputSchema`, `outputSchema`, prompt `arguments`: property names and every string.
    Schema,
    /// `annotations`, `_meta`, `mimeType` and any other member.
    Annotations,
}

impl FieldClass {
    pub(crate) fn bit(self) -> u8 {
        match self {
            FieldClass::Name => 1,
            FieldClass::Title => 2,
            FieldClass::Description => 4,
            FieldClass::Schema => 8,
            FieldClass::Annotations => 16,
        }
    }
}

/// One rule as written in `default_rules.json` or in the plugin configuration's
/// `inspection.rules` (where every field but `id` is optional: an entry with a built-in id
/// overrides it, any other id adds a phrase rule).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleDef {
    pub id: String,
    pub kind: Option<RuleKind>,
    pub severity: Option<Severity>,
    /// Severity when the rule matches a tool result; absent: not applied to results.
    pub result_severity: Option<Severity>,
    /// `false` turns off a result_severity inherited from the built-in rule.
    pub apply_to_results: Option<bool>,
    pub enabled: Option<bool>,
    /// Fields of a definition the rule reads (phrase rules); absent: all of them.
    pub fields: Option<Vec<FieldClass>>,
    /// Word patterns; in an override they are added to the built-in ones.
    pub patterns: Vec<String>,
    /// Literal substrings; in an override they are added to the built-in ones.
    pub substrings: Vec<String>,
    /// Shortest base64 run reported (`base64` rules).
    pub min_len: Option<usize>,
    pub note: Option<String>,
}

/// The rule set file.
#[derive(Debug, Clone)]
pub struct RuleSetDef {
    pub version: String,
    pub rules: Vec<RuleDef>,
}

const KINDS: [(&str, RuleKind); 9] = [
    ("phrase", RuleKind::Phrase),
    ("invisible", RuleKind::Invisible),
    ("bidi", RuleKind::Bidi),
    ("tag-chars", RuleKind::TagChars),
    ("length", RuleKind::Length),
    ("base64", RuleKind::Base64),
    ("pin", RuleKind::Pin),
    ("shadowing", RuleKind::Shadowing),
    ("protocol", RuleKind::Protocol),
];
const FIELD_CLASSES: [(&str, FieldClass); 5] = [
    ("name", FieldClass::Name),
    ("title", FieldClass::Title),
    ("description", FieldClass::Description),
    ("schema", FieldClass::Schema),
    ("annotations", FieldClass::Annotations),
];

impl RuleDef {
    /// Reads one rule (the same reader for the built-in file and the configuration).
    pub fn read(v: &Val) -> Result<Self, ConfigError> {
        let o = v.object(&[
            "id", "kind", "severity", "result_severity", "apply_to_results", "enabled", "fields", "patterns",
            "substrings", "min_len", "note",
        ])?;
        let severity = |s: &Val| s.choice(&super::config::SEVERITIES);
        Ok(RuleDef {
            id: o.req("id")?.string()?,
            kind: o.opt("kind", |k| k.choice(&KINDS))?,
            severity: o.opt("severity", severity)?,
            result_severity: o.opt("result_severity", severity)?,
            apply_to_results: o.opt("apply_to_results", Val::bool)?,
            enabled: o.opt("enabled", Val::bool)?,
            fields: o.opt("fields", |l| l.list(|f| f.choice(&FIELD_CLASSES)))?,
            patterns: o.opt("patterns", |l| l.list(Val::string))?.unwrap_or_default(),
            substrings: o.opt("substrings", |l| l.list(Val::string))?.unwrap_or_default(),
            min_len: o.opt("min_len", Val::usize)?,
            note: o.opt("note", Val::string)?,
        })
    }
}

/// The built-in rule set, parsed.
pub fn default_rule_set() -> Result<RuleSetDef, String> {
    let parse = || -> Result<RuleSetDef, ConfigError> {
        let doc = read::parse(DEFAULT_RULES_JSON.as_bytes())?;
        let o = Val::root(&doc).object(&["version", "rules"])?;
        Ok(RuleSetDef { version: o.req("version")?.string()?, rules: o.req("rules")?.list(RuleDef::read)? })
    };
    parse().map_err(|e| format!("built-in rule set: {e}"))
}

/// Most slots in one pattern, and most words one match may span.
pub const MAX_SLOTS: usize = 16;
pub const MAX_SPAN: usize = 64;

/// One alternative of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Alt {
    Exact(String),
    Prefix(String),
    Url,
    Email,
    Number,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Most words allowed between the previous slot's word and this one.
    pub gap: u8,
    pub alts: Vec<Alt>,
}

/// A compiled word pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    pub rule: usize,
    pub slots: Vec<Slot>,
}

/// Compiles one pattern string; the error says what is wrong with it.
pub(crate) fn compile_pattern(rule: usize, text: &str) -> Result<Pattern, String> {
    let mut slots: Vec<Slot> = Vec::new();
    let mut gap: Option<u8> = None;
    for item in text.split_whitespace() {
        if let Some(n) = item.strip_prefix('~') {
            if slots.is_empty() {
                return Err("a pattern cannot start with a gap `~N`".into());
            }
            if gap.is_some() {
                return Err("two gaps in a row".into());
            }
            let n: u8 = n.parse().map_err(|_| format!("`{item}` is not a gap `~N` with N in 0..=16"))?;
            if n > 16 {
                return Err(format!("`{item}`: a gap is at most 16 words"));
            }
            gap = Some(n);
            continue;
        }
        let mut alts = Vec::new();
        for alt in item.split('|') {
            alts.push(compile_alt(alt)?);
        }
        slots.push(Slot { gap: gap.take().unwrap_or(0), alts });
    }
    if gap.is_some() {
        return Err("a pattern cannot end with a gap".into());
    }
    if slots.is_empty() {
        return Err("empty pattern".into());
    }
    if slots.len() > MAX_SLOTS {
        return Err(format!("at most {MAX_SLOTS} words per pattern"));
    }
    let span: usize = slots.iter().map(|s| 1 + usize::from(s.gap)).sum();
    if span > MAX_SPAN {
        return Err(format!("a match may span at most {MAX_SPAN} words (words plus gaps), this one {span}"));
    }
    Ok(Pattern { rule, slots })
}

fn compile_alt(alt: &str) -> Result<Alt, String> {
    match alt {
        "@url" => return Ok(Alt::Url),
        "@email" => return Ok(Alt::Email),
        "@number" => return Ok(Alt::Number),
        _ => {}
    }
    let (word, prefix) = match alt.strip_suffix('*') {
        Some(w) => (w, true),
        None => (alt, false),
    };
    if word.is_empty() {
        return Err(format!("empty alternative in `{alt}`"));
    }
    if !word.chars().all(|c| c.is_alphanumeric() && !c.is_uppercase()) {
        return Err(format!("`{alt}`: a word is lowercase letters and digits (optionally ending in `*`), or @url, @email, @number"));
    }
    Ok(if prefix { Alt::Prefix(word.to_string()) } else { Alt::Exact(word.to_string()) })
}

/// Checks a substring pattern and returns it with its boundary flags.
pub(crate) fn compile_substring(s: &str) -> Result<String, String> {
    if s.trim().len() < 2 {
        return Err("a substring is at least two characters".into());
    }
    if s.len() > 256 {
        return Err("a substring is at most 256 bytes".into());
    }
    if s.chars().any(char::is_uppercase) {
        return Err(format!("`{s}` must be lowercase (text is lowercased before matching)"));
    }
    if s.contains("  ") {
        return Err(format!("`{s}`: whitespace is collapsed to single spaces before matching"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn the_built_in_rule_set_parses_and_every_pattern_compiles() {
        let set = default_rule_set().unwrap();
        assert_eq!(set.version, "2026-11-1");
        for (i, r) in set.rules.iter().enumerate() {
            assert!(r.kind.is_some() && r.severity.is_some(), "{}", r.id);
            for p in &r.patterns {
                compile_pattern(i, p).unwrap_or_else(|e| panic!("{}: {p}: {e}", r.id));
            }
            for s in &r.substrings {
                compile_substring(s).unwrap_or_else(|e| panic!("{}: {s}: {e}", r.id));
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn pattern_syntax() {
        let p = compile_pattern(0, "ignore|disregard ~3 previous instruction*").unwrap();
        assert_eq!(p.slots.len(), 3);
        assert_eq!(p.slots[1].gap, 3);
        assert_eq!(p.slots[2].alts, vec![Alt::Prefix("instruction".into())]);
        for bad in ["", "~2 a", "a ~2", "a ~2 ~3 b", "a ~99 b", "A", "a|", "a.b", "x ~16 x ~16 x ~16 x ~16 x"] {
            assert!(compile_pattern(0, bad).is_err(), "{bad}");
        }
        assert!(compile_substring("<IMPORTANT>").is_err());
        assert!(compile_substring("").is_err());
    }
}
