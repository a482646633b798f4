//! Layered detection of tool poisoning: every string of a definition (names, titles,
//! descriptions, every schema keyword, enum/default/const/examples, annotations, outputSchema,
//! `_meta`) is normalized and decoded, read by text detectors (English patterns that understand
//! negation and quotation, phrases in other languages) and structural detectors (URLs, values,
//! parameters, annotations, references to other tools), and the evidence is combined per tool
//! into one score: a linear model over named features whose weights and per-action thresholds are
//! data (`model.json`, trained and calibrated by `corpus/train.py` on the corpus's dev split).
//!
//! ```text
//! Detector::builtin() -> Detector                    // once, at configuration time
//! Detector::assess(&self, tool: &Value, others: &[&str], legacy: [u32; 2]) -> Assessment
//! Assessment { score, features: Vec<f32>, evidence: Vec<Evidence> }
//! Detector::level(score) -> Option<Severity>         // Medium = record, High = strip, Critical = quarantine
//! ```

mod decode;
pub mod lexicon;

use super::rules::{compile_pattern, compile_substring};
use super::text::{excerpt, Matcher, Scratch};
use crate::severity::Severity;
use lexicon::{Cat, CATS};
use serde::Deserialize;
use serde_json::Value;

/// The trained weights and thresholds.
pub const MODEL_JSON: &str = include_str!("model.json");

/// Feature names, in vector order (the model's weights follow this order by name).
pub const FEATURES: &[&str] = &[
    // text categories found (not negated, not quoted), one per lexicon::CATS
    "cat/override", "cat/conceal", "cat/secret-file", "cat/secret-word", "cat/context", "cat/exfil-action", "cat/trigger",
    "cat/shadow", "cat/directive", "cat/command", "cat/role-marker", "cat/destructive", "cat/mutating",
    // where strong text evidence sits
    "at/schema", "at/value", "at/meta", "at/name",
    // other languages, decoded text
    "lang/strong", "lang/any", "decoded/strong", "decoded/blob",
    // characters
    "chars/ansi", "chars/tags", "chars/bidi", "chars/zero-width", "layout/hidden-block",
    // URLs
    "url/loot", "url/catcher", "url/image", "url/any", "url/ip", "text/email",
    // values, parameters, annotations, references
    "value/url", "value/email", "value/command", "value/env", "param/context", "param/secret", "annot/contradiction",
    "ref/other-tool", "ref/foreign-tool", "ref/other-change",
    // benign signals and size
    "neg/negated", "neg/quoted", "size/long", "size/very-long",
    // the rule set's phrase hits
    "legacy/high", "legacy/medium",
    // combinations
    "combo/target-send", "combo/target-directive", "combo/conceal-action", "combo/directive-command", "combo/shadow-ref",
    "combo/trigger-action", "combo/count-strong", "combo/mail-out",
    // structure read with the tool's own parameters; decoded text that reads as prose
    "value/recipient-email", "ask/into-param", "cmd/remote", "decoded/prose", "combo/secret-into-param", "combo/schema-order",
];

pub const NF: usize = FEATURES.len();

fn fidx(name: &str) -> usize {
    FEATURES.iter().position(|f| *f == name).unwrap_or(0)
}

/// One piece of evidence: the feature it set, where, and an excerpt.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub feature: &'static str,
    pub field: String,
    pub excerpt: String,
}

/// The detector's view of one tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub score: f32,
    pub features: Vec<f32>,
    pub evidence: Vec<Evidence>,
}

/// Scores from which an action applies (a score is a log-odds).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub record: f32,
    pub strip: f32,
    pub quarantine: f32,
}

#[derive(Debug, Clone, Deserialize)]
struct ModelDef {
    version: String,
    bias: f32,
    weights: std::collections::BTreeMap<String, f32>,
    thresholds: Thresholds,
}

/// The compiled detector: built once, read-only.
#[derive(Debug, Clone)]
pub struct Detector {
    matcher: Matcher,
    /// `lexicon::STOPWORDS`, sorted for binary search.
    stop: Vec<&'static str>,
    /// `lexicon::PUT_VERBS`, sorted for binary search.
    put_verbs: Vec<&'static str>,
    weights: Vec<f32>,
    bias: f32,
    pub thresholds: Thresholds,
    pub version: String,
}

/// Most strings read per tool, deepest nesting walked, longest string read.
const MAX_STRINGS: usize = 2000;
const MAX_DEPTH: usize = 24;
const MAX_STRING_BYTES: usize = 64 << 10;

/// What kind of place a string sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Name,
    Description,
    /// Schema descriptions, titles, property names.
    Schema,
    /// enum, default, const, examples (and their items).
    Value,
    /// annotations, `_meta`, any other member.
    Meta,
}

/// The names of a list's tools, read once per list: first word → the names (as word lists)
/// starting with it, so a description is checked with one lookup per word.
#[derive(Debug, Clone, Default)]
pub struct Others {
    map: std::collections::HashMap<String, Vec<Vec<String>>>,
}

impl Others {
    pub fn new(names: &[&str]) -> Others {
        let mut map: std::collections::HashMap<String, Vec<Vec<String>>> = std::collections::HashMap::new();
        for o in names.iter().filter(|o| o.len() >= 4).take(256) {
            let ws: Vec<String> = name_words(o).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect();
            if ws.len() >= 2 || ws.first().is_some_and(|w| w.len() >= 6) {
                if let Some(first) = ws.first().cloned() {
                    map.entry(first).or_default().push(ws);
                }
            }
        }
        Others { map }
    }
}

struct Walk<'a> {
    det: &'a Detector,
    sc: Scratch,
    f: Vec<f32>,
    ev: Vec<Evidence>,
    strings: usize,
    /// The other tools of the list (the tool's own name is left out where it is read).
    others: &'a Others,
    own: String,
    /// The tool's own parameter names, as words ("debug_info" → "debug info").
    params: Vec<Vec<String>>,
    /// Indices of `ask/into-param`, `cmd/remote`, `ref/foreign-tool`.
    idx: [usize; 3],
    cats_plain: [bool; CATS.len()],
}

fn is_strong(c: Cat) -> bool {
    matches!(c, Cat::Override | Cat::Conceal | Cat::ExfilAction | Cat::Trigger | Cat::Shadow | Cat::Command | Cat::Role)
}

impl Detector {
    /// The built-in vocabulary and the committed model.
    pub fn builtin() -> Detector {
        let mut matcher = Matcher::default();
        for (cat, patterns, subs) in lexicon::ENGLISH {
            for p in *patterns {
                if let Ok(p) = compile_pattern(cat.index(), p) {
                    matcher.add_pattern(p);
                }
            }
            for s in *subs {
                if let Ok(s) = compile_substring(s) {
                    matcher.add_substring(cat.index(), s);
                }
            }
        }
        let (weights, bias, thresholds, version) = match serde_json::from_str::<ModelDef>(MODEL_JSON) {
            Ok(m) => (FEATURES.iter().map(|f| m.weights.get(*f).copied().unwrap_or(0.0)).collect(), m.bias, m.thresholds, m.version),
            Err(_) => (vec![0.0; NF], -10.0, Thresholds { record: 0.0, strip: 1.0, quarantine: 2.0 }, "none".into()),
        };
        let mut stop = lexicon::STOPWORDS.to_vec();
        stop.sort_unstable();
        stop.dedup();
        let mut put_verbs = lexicon::PUT_VERBS.to_vec();
        put_verbs.sort_unstable();
        put_verbs.dedup();
        Detector { matcher, stop, put_verbs, weights, bias, thresholds, version }
    }

    /// The same detector with other thresholds.
    pub fn with_thresholds(mut self, t: Thresholds) -> Detector {
        self.thresholds = t;
        self
    }

    /// The severity a score earns: Medium (record), High (strip), Critical (quarantine), or none.
    pub fn level(&self, score: f32) -> Option<Severity> {
        if score >= self.thresholds.quarantine {
            Some(Severity::Critical)
        } else if score >= self.thresholds.strip {
            Some(Severity::High)
        } else if score >= self.thresholds.record {
            Some(Severity::Medium)
        } else {
            None
        }
    }

    /// Reads one definition. `others`: names of the other tools of the same list; `legacy`: the
    /// rule set's high and medium phrase hits on it.
    pub fn assess(&self, tool: &Value, others: &[&str], legacy: [u32; 2]) -> Assessment {
        self.assess_with(tool, &Others::new(others), legacy)
    }

    /// [`Detector::assess`] with the list's names read once ([`Others::new`]) for all its tools.
    pub fn assess_with(&self, tool: &Value, others: &Others, legacy: [u32; 2]) -> Assessment {
        let own = tool.get("name").and_then(Value::as_str).unwrap_or("");
        let mut w = Walk {
            det: self,
            sc: Scratch::default(),
            f: vec![0.0; NF],
            ev: Vec::new(),
            strings: 0,
            others,
            own: name_words(own),
            params: tool
                .get("inputSchema")
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| {
                    p.keys()
                        .take(64)
                        .map(|k| name_words(k).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect::<Vec<_>>())
                        .filter(|ws| !ws.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            cats_plain: [false; CATS.len()],
            idx: [fidx("ask/into-param"), fidx("cmd/remote"), fidx("ref/foreign-tool")],
        };
        if let Value::Object(map) = tool {
            for (k, v) in map {
                let place = match k.as_str() {
                    "name" | "uri" | "uriTemplate" => Place::Name,
                    "title" | "description" => Place::Description,
                    "inputSchema" | "outputSchema" | "arguments" => Place::Schema,
                    "icons" => continue,
                    _ => Place::Meta,
                };
                w.walk(v, place, k, false, 0);
            }
            w.annotations(map);
        } else {
            w.walk(tool, Place::Description, "", false, 0);
        }
        w.set("legacy/high", legacy[0].min(2) as f32 / 2.0, "", String::new);
        w.set("legacy/medium", legacy[1].min(2) as f32 / 2.0, "", String::new);
        w.combine();
        let score = self.bias + w.f.iter().zip(&self.weights).map(|(x, k)| x * k).sum::<f32>();
        Assessment { score, features: w.f, evidence: w.ev }
    }
}

/// "send_email" → "send email" (how it reads in normalized text).
fn name_words(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && prev_lower {
                out.push(' ');
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            out.extend(c.to_lowercase());
        } else {
            if !out.ends_with(' ') && !out.is_empty() {
                out.push(' ');
            }
            prev_lower = false;
        }
    }
    out.trim().to_string()
}

impl Walk<'_> {
    fn set(&mut self, name: &'static str, value: f32, field: &str, excerpt: impl FnOnce() -> String) {
        let i = fidx(name);
        if let Some(x) = self.f.get_mut(i) {
            if value > *x {
                if *x == 0.0 && !field.is_empty() && self.ev.len() < 24 {
                    self.ev.push(Evidence { feature: name, field: field.to_string(), excerpt: excerpt() });
                }
                *x = value;
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        self.f.get(fidx(name)).is_some_and(|x| *x > 0.0)
    }

    /// `has` for the features checked once per string (their index found once).
    fn has_at(&self, i: usize) -> bool {
        self.f.get(i).is_some_and(|x| *x > 0.0)
    }

    fn walk(&mut self, v: &Value, place: Place, path: &str, in_value: bool, depth: usize) {
        if depth > MAX_DEPTH || self.strings >= MAX_STRINGS {
            return;
        }
        match v {
            Value::String(s) => {
                let p = if in_value { Place::Value } else { place };
                self.string(s, p, path);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().take(256) {
                    self.walk(item, place, &format!("{path}[{i}]"), in_value, depth + 1);
                }
            }
            Value::Object(map) => {
                let properties = path.ends_with("properties") || path.ends_with("patternProperties");
                for (k, item) in map {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    if properties {
                        self.param_name(k, &p);
                        self.string(k, Place::Schema, &p);
                    }
                    let value_key = matches!(k.as_str(), "enum" | "default" | "const" | "examples" | "example");
                    self.walk(item, place, &p, in_value || (value_key && place == Place::Schema), depth + 1);
                }
            }
            _ => {}
        }
    }

    fn param_name(&mut self, k: &str, path: &str) {
        let words = name_words(k);
        let ws: Vec<&str> = words.split(' ').collect();
        if ws.iter().any(|w| lexicon::CONTEXT_PARAMS.contains(w)) {
            self.set("param/context", 1.0, path, || k.to_string());
        }
        if ws.iter().any(|w| lexicon::SECRET_PARAMS.contains(w)) {
            self.set("param/secret", 1.0, path, || k.to_string());
        }
    }

    /// Reads one string: characters, URLs, values, then the text and its decoded variants.
    fn string(&mut self, raw: &str, place: Place, path: &str) {
        if raw.is_empty() || self.strings >= MAX_STRINGS {
            return;
        }
        self.strings += 1;
        let raw = raw.get(..floor(raw, MAX_STRING_BYTES)).unwrap_or("");
        let (s, ansi) = decode::strip_ansi(raw);
        if ansi > 0 {
            self.set("chars/ansi", 1.0, path, || excerpt(raw, 0, 0, 120));
        }
        if place == Place::Description && path == "description" {
            let n = s.chars().count();
            if n > 1500 {
                self.set("size/long", 1.0, "", String::new);
            }
            if n > 4000 {
                self.set("size/very-long", 1.0, "", String::new);
            }
        }
        if hidden_block(&s) {
            self.set("layout/hidden-block", 1.0, path, || excerpt(&s, 0, 0, 120));
        }
        self.urls(&s, place, path);
        if place == Place::Value {
            self.value(&s, path);
        } else if let Some(e) = find_email(&s) {
            self.set("text/email", 1.0, path, || excerpt(&s, 0, 0, 120).replace("\u{0}", "") + &format!(" [{e}]"));
        }
        let mut sc = std::mem::take(&mut self.sc);
        sc.normalize(&s);
        let st = sc.stats;
        if st.tags > 0 {
            self.set("chars/tags", 1.0, path, || excerpt(&s, st.first_tag, st.first_tag, 120));
        }
        if st.bidi > 0 {
            self.set("chars/bidi", 1.0, path, || excerpt(&s, st.first_bidi, st.first_bidi, 120));
        }
        if st.invisible > 0 {
            self.set("chars/zero-width", (st.invisible.min(4) as f32) / 4.0, path, || excerpt(&s, st.first_invisible, st.first_invisible, 120));
        }
        let hidden = (!sc.hidden.is_empty()).then(|| sc.hidden.clone());
        let plain = self.text(&sc, &s, place, path, None, true);
        if place == Place::Description || (place == Place::Schema && path.ends_with("description")) {
            self.references(&sc, path, &s);
            self.foreign_tool(&s, path);
        }
        if place != Place::Value && place != Place::Name {
            self.ask_into_param(&sc, place, path, &s);
        }
        if plain.get(Cat::Command.index()).copied().unwrap_or(false)
            || s.contains('|')
            || ["install", "credential", "npx", "/dev/tcp", " -e ", "index-url"].iter().any(|w| s.contains(w))
        {
            self.remote_exec(&s, path);
        }
        let words = sc.words.len();
        let stop = sc
            .words
            .iter()
            .filter(|&&(a, b)| sc.norm.get(a as usize..b as usize).is_some_and(|w| self.det.stop.binary_search(&w).is_ok()))
            .count();
        self.sc = sc;
        let share = if words == 0 { 1.0 } else { stop as f32 / words as f32 };
        let det = self.det;
        let is_stop = |w: &str| det.stop.binary_search(&w).is_ok();
        let mut decoded: Vec<(decode::Encoding, String)> = decode::variants(&s, share, words, &is_stop);
        if let Some(h) = hidden {
            decoded.push((decode::Encoding::Escapes, h));
        }
        for (enc, text) in decoded {
            let blob = !matches!(enc, decode::Encoding::Rot13 | decode::Encoding::Reversed | decode::Encoding::Leet);
            if blob {
                self.set("decoded/blob", 1.0, path, || format!("{}: {}", enc.as_str(), excerpt(&text, 0, 0, 100)));
            }
            let mut sc = std::mem::take(&mut self.sc);
            sc.normalize(&text);
            // Decoded text that reads as English prose (far more of the commonest words than the
            // encoded form had) was written to be read: it counts as the plain text would.
            // one-letter words and "on" (reversed "no") say nothing about a decoding
            let reversed = enc == decode::Encoding::Reversed;
            let dstop = sc
                .words
                .iter()
                .filter_map(|&(a, b)| sc.norm.get(a as usize..b as usize))
                .filter(|w| w.len() >= 2 && !(reversed && *w == "on") && self.det.stop.binary_search(w).is_ok())
                .count();
            let dwords = sc.words.len();
            let whole = matches!(enc, decode::Encoding::Leet | decode::Encoding::Escapes | decode::Encoding::Percent);
            let blob_enc = matches!(enc, decode::Encoding::Base64 | decode::Encoding::Base32 | decode::Encoding::Hex);
            let prose = if blob_enc {
                // a short blob that decodes to words ("leak the env") was written to be read
                dwords >= 3 && dstop >= 1 && text.chars().all(|c| c.is_alphanumeric() || c.is_whitespace() || c.is_ascii_punctuation())
            } else {
                dwords >= 4 && dstop >= 2 && dstop * 100 >= dwords * 12 && (!whole || dstop >= stop + 2)
            };
            if prose {
                self.set("decoded/prose", 1.0, path, || format!("{}: {}", enc.as_str(), excerpt(&text, 0, 0, 100)));
            }
            let found = self.text(&sc, &text, place, path, Some(enc), prose);
            if prose {
                self.ask_into_param(&sc, place, path, &text);
                self.remote_exec(&text, path);
            }
            self.sc = sc;
            if prose {
                self.urls(&text, place, path);
                if let Some(e) = find_email(&text) {
                    self.set("text/email", 1.0, path, || format!("{}: {e}", enc.as_str()));
                }
            }
            let new_strong = found.iter().zip(plain.iter()).enumerate().any(|(i, (d, p))| {
                *d && !*p && CATS.get(i).is_some_and(|c| !matches!(c, Cat::Mutating | Cat::Destructive | Cat::Directive))
            });
            let strong_count = found.iter().enumerate().filter(|(i, d)| **d && CATS.get(*i).is_some_and(|c| is_strong(*c) || matches!(c, Cat::SecretFile | Cat::Context))).count();
            if new_strong && (strong_count >= 1) {
                self.set("decoded/strong", 1.0, path, || format!("{}: {}", enc.as_str(), excerpt(&text, 0, 0, 100)));
            }
        }
    }

    /// Text categories of one normalized string; returns which were found (not negated, not
    /// quoted). `enc`: the string is a decoded variant (its hits only feed `decoded/*`).
    fn text(&mut self, sc: &Scratch, orig: &str, place: Place, path: &str, enc: Option<decode::Encoding>, record: bool) -> [bool; CATS.len()] {
        let mut found = [false; CATS.len()];
        let mut hits: Vec<(usize, usize, usize)> = Vec::new();
        let mut done = [false; CATS.len()];
        self.det.matcher.scan(sc, &|_| true, &mut done, &mut |c, a, b| hits.push((c, a, b)));
        for (ci, a, b) in hits {
            let Some(&cat) = CATS.get(ci) else { continue };
            // `@url` and `@email` alone are exfil evidence only in descriptions.
            if cat == Cat::ExfilAction && place == Place::Value {
                continue;
            }
            // A public key is not a secret: `id_rsa.pub`, `~/.ssh/id_ed25519.pub`, "SSH public key".
            if cat == Cat::SecretFile && public_key_path(&sc.norm, a, b) {
                continue;
            }
            if cat == Cat::SecretWord && sc.norm.get(a..b).is_some_and(|m| m.contains("public")) {
                continue;
            }
            // A tool speaking of itself ("this tool is deprecated") or a match running across
            // sentences does not redirect the use of another tool.
            if cat == Cat::Shadow && (sc.norm.get(a..b).is_some_and(sentence_end) || self_reference(sc, a)) {
                continue;
            }
            if cat.negatable() && negated(sc, a, b, orig) {
                if enc.is_none() {
                    let (s0, e0) = sc.original_range(a, b, orig);
                    self.set("neg/negated", 1.0, path, || excerpt(orig, s0, e0, 120));
                }
                continue;
            }
            if quoted(sc, a) {
                if enc.is_none() {
                    let (s0, e0) = sc.original_range(a, b, orig);
                    self.set("neg/quoted", 1.0, path, || excerpt(orig, s0, e0, 120));
                }
                continue;
            }
            if let Some(x) = found.get_mut(ci) {
                *x = true;
            }
            if record {
                self.record_cat(cat, place, path, sc, orig, a, b);
            }
        }
        if !sc.norm.is_ascii() {
            for (cat, phrases) in lexicon::OTHER_LANGUAGES {
                if let Some(p) = phrases.iter().find(|p| sc.norm.contains(**p)) {
                    if let Some(x) = found.get_mut(cat.index()) {
                        *x = true;
                    }
                    if record {
                        let at = sc.norm.find(*p).unwrap_or(0);
                        let (s0, e0) = sc.original_range(at, at + p.len(), orig);
                        let ex = || excerpt(orig, s0, e0, 120);
                        if matches!(cat, Cat::Override | Cat::Conceal | Cat::Trigger) {
                            self.set("lang/strong", 1.0, path, ex);
                        } else {
                            self.set("lang/any", 1.0, path, ex);
                        }
                        self.record_cat(*cat, place, path, sc, orig, at, at + p.len());
                    }
                }
            }
        }
        if enc.is_none() {
            for (i, x) in found.iter().enumerate() {
                if *x {
                    if let Some(p) = self.cats_plain.get_mut(i) {
                        *p = true;
                    }
                }
            }
        }
        found
    }

    #[allow(clippy::too_many_arguments)]
    fn record_cat(&mut self, cat: Cat, place: Place, path: &str, sc: &Scratch, orig: &str, a: usize, b: usize) {
        let (s0, e0) = sc.original_range(a, b, orig);
        let name = FEATURES.get(cat.index()).copied().unwrap_or("cat/override");
        // Names and destructive/mutating words only matter to annotations.
        if matches!(cat, Cat::Destructive | Cat::Mutating) {
            if matches!(place, Place::Name | Place::Description) && (path == "name" || path == "description" || path == "title") {
                self.set(name, 1.0, path, || excerpt(orig, s0, e0, 120));
            }
            return;
        }
        self.set(name, 1.0, path, || excerpt(orig, s0, e0, 120));
        if is_strong(cat) || matches!(cat, Cat::SecretFile | Cat::Context) {
            let at = match place {
                Place::Schema => Some("at/schema"),
                Place::Value => Some("at/value"),
                Place::Meta => Some("at/meta"),
                Place::Name => Some("at/name"),
                Place::Description => None,
            };
            if let Some(at) = at {
                self.set(at, 1.0, path, || excerpt(orig, s0, e0, 120));
            }
        }
    }

    /// A request to put something into a parameter: a put verb, then a destination that names a
    /// parameter of this tool, the words "parameter"/"field"/"argument", or (in a parameter's own
    /// description) "here".
    fn ask_into_param(&mut self, sc: &Scratch, place: Place, path: &str, orig: &str) {
        if sc.words.len() < 3 || self.has_at(self.idx[0]) {
            return;
        }
        let word = |j: usize| sc.words.get(j).and_then(|&(a, b)| sc.norm.get(a as usize..b as usize)).unwrap_or("");
        let params = &self.params;
        let names_param = |j: usize| -> bool {
            let w = word(j);
            (place == Place::Schema && w == "value")
                || lexicon::PARAM_WORDS.iter().any(|p| w == *p || (w.len() == p.len() + 1 && w.starts_with(p) && w.ends_with('s')))
                || params.iter().any(|ws| ws.iter().enumerate().all(|(i, x)| word(j + i) == x))
        };
        let n = sc.words.len();
        let mut span = None;
        for k in 0..n {
            if self.det.put_verbs.binary_search(&word(k)).is_err() {
                continue;
            }
            let mut hit = None;
            // "set this to", "fill this with": in a parameter's description, this parameter
            if place == Place::Schema && matches!(word(k + 1), "this" | "it") && matches!(word(k + 2), "to" | "with" | "as" | "from") {
                let a = sc.words.get(k).map_or(0, |w| w.0 as usize);
                let b = sc.words.get(k + 2).map_or(a, |w| w.1 as usize);
                if !negated(sc, a, b, orig) {
                    span = Some((a, b));
                    break;
                }
            }
            for j in k + 1..(k + 12).min(n) {
                let w = word(j);
                if place == Place::Schema && w == "here" && j <= k + 8 {
                    hit = Some(j);
                    break;
                }
                if lexicon::PUT_PREPS.contains(&w) && (j + 1..(j + 5).min(n)).any(&names_param) {
                    hit = Some(j);
                    break;
                }
            }
            if let Some(j) = hit {
                let a = sc.words.get(k).map_or(0, |w| w.0 as usize);
                let b = sc.words.get(j).map_or(a, |w| w.1 as usize);
                if !negated(sc, a, b, orig) {
                    span = Some((a, b));
                    break;
                }
            }
        }
        if let Some((a, b)) = span {
            let (s0, e0) = sc.original_range(a, b, orig);
            self.set("ask/into-param", 1.0, path, || excerpt(orig, s0, e0, 120));
        }
    }

    /// A spelled-out command that fetches and runs code, opens a remote shell or hands over
    /// credentials, in a sentence that does not refuse it.
    fn remote_exec(&mut self, s: &str, path: &str) {
        if self.has_at(self.idx[1]) {
            return;
        }
        let lower = s.to_ascii_lowercase();
        if let Some(pkg) = typosquat(&lower) {
            self.set("cmd/remote", 1.0, path, || format!("installs {pkg}, one letter off a popular package: {}", excerpt(s, 0, 0, 100)));
            return;
        }
        for sentence in lower.split(['\n', ';']).flat_map(|l| l.split(". ")) {
            let Some(p) = lexicon::REMOTE_EXEC.iter().find(|p| sentence.contains(**p)) else { continue };
            // "| sh" is a pipe into a shell only after a download or a decode
            if p.starts_with('|') && !(sentence.contains("curl") || sentence.contains("wget") || sentence.contains("iwr") || sentence.contains("base64") || sentence.contains("://")) {
                continue;
            }
            let refused = sentence.replace(['\'', '\u{2019}'], "").split(|c: char| !c.is_alphanumeric()).any(|w| {
                matches!(w, "never" | "not" | "dont" | "cannot" | "refuse" | "refuses" | "refused" | "reject" | "rejects" | "rejected" | "blocks" | "blocked" | "forbidden" | "prohibited" | "disallowed")
            });
            if refused {
                continue;
            }
            let at = lower.find(*p).unwrap_or(0);
            self.set("cmd/remote", 1.0, path, || excerpt(s, at, at + p.len(), 120));
            return;
        }
    }

    /// Whether the sentence naming another tool (`name`, as words) disparages that tool ("is
    /// malfunctioning") or changes its call
    /// ("swap the beneficiary IBAN", "set the remote to").
    fn other_change(&mut self, orig: &str, name: &str, path: &str) {
        if self.has("ref/other-change") || name.is_empty() {
            return;
        }
        let first = name.split(' ').next().unwrap_or(name);
        for sent in orig.split(['\n', ';', '!', '?']).flat_map(|l| l.split(". ")).take(400) {
            // cheap test first: the name's first word is in the sentence
            if !sent.as_bytes().windows(first.len()).any(|w| w.eq_ignore_ascii_case(first.as_bytes())) {
                continue;
            }
            let words = name_words(sent);
            if !format!(" {words} ").contains(&format!(" {name} ")) {
                continue;
            }
            let ws: Vec<&str> = words.split(' ').collect();
            // the other tool is what is disparaged: the word comes after its name ("read_file is
            // malfunctioning"), not before it ("DEPRECATED: use read_text_file instead")
            let at = words.find(name).map_or(0, |i| words.get(..i).map_or(0, |p| p.split(' ').count()));
            let disparaged = ws.iter().skip(at).any(|w| lexicon::DISPARAGE.contains(w));
            let changed = ws.iter().any(|w| lexicon::CHANGE_VERBS.contains(w)) && ws.iter().any(|w| lexicon::CHANGE_OBJECTS.contains(w));
            if disparaged || changed {
                self.set("ref/other-change", 1.0, path, || excerpt(sent, 0, 0, 120));
                return;
            }
        }
    }

    /// A tool that is not in this list, named by its identifier next to the word "tool" or
    /// "server" ("the read_file tool", "`send_email` tool"): text about tools elsewhere.
    fn foreign_tool(&mut self, s: &str, path: &str) {
        if self.has_at(self.idx[2]) || !(s.contains("tool") || s.contains("server") || s.contains("Tool")) {
            return;
        }
        let mut prev: Option<&str> = None;
        for next in s.split_whitespace().take(4000) {
            let Some(t) = prev.replace(next) else { continue };
            let n = next.trim_matches(|c: char| !c.is_alphanumeric());
            if !n.starts_with(['t', 'T', 's', 'S', 'f', 'F', 'i', 'I', 'p', 'P'])
                || !["tool", "tools", "server", "function", "integration", "plugin"].iter().any(|w| n.eq_ignore_ascii_case(w))
            {
                continue;
            }
            let id = t.trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '-');
            // an identifier (snake_case, kebab-case, lowerCamel), not a brand ("CircleCI", "GitHub")
            let looks_id = id.len() >= 4
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && (id.contains('_')
                    || id.contains('-') && id.chars().any(|c| c.is_ascii_lowercase())
                    || id.starts_with(|c: char| c.is_ascii_lowercase()) && id.chars().any(|c| c.is_ascii_uppercase()));
            let words = name_words(id);
            let listed = words.split(' ').next().and_then(|f| self.others.map.get(f)).is_some_and(|c| c.iter().any(|ws| ws.join(" ") == words));
            if looks_id && !listed && words != self.own {
                self.set("ref/foreign-tool", 1.0, path, || format!("names {id}: {}", excerpt(s, 0, 0, 100)));
                self.other_change(s, &words, path);
                return;
            }
        }
    }

    /// Another tool of the same list named in a description.
    fn references(&mut self, sc: &Scratch, path: &str, orig: &str) {
        if self.others.map.is_empty() || sc.norm.len() < 8 {
            return;
        }
        let word = |j: usize| sc.words.get(j).and_then(|&(a, b)| sc.norm.get(a as usize..b as usize)).unwrap_or("");
        let mut found: Option<String> = None;
        'outer: for k in 0..sc.words.len() {
            let Some(cands) = self.others.map.get(word(k)) else { continue };
            for ws in cands {
                if ws.iter().enumerate().all(|(i, w)| word(k + i) == w) {
                    let name = ws.join(" ");
                    if !self.own.contains(&name) {
                        found = Some(name);
                        break 'outer;
                    }
                }
            }
        }
        if let Some(o) = found {
            self.set("ref/other-tool", 1.0, path, || format!("names {o}: {}", excerpt(orig, 0, 0, 100)));
            self.other_change(orig, &o, path);
        }
    }

    fn urls(&mut self, s: &str, place: Place, path: &str) {
        let lower = s.to_ascii_lowercase();
        // An image the client fetches by itself is a beacon when its address carries something
        // (a placeholder, a loot word, a catcher host); a chart's plain image link is not.
        let image = lower.contains("![") && lower.contains("](http") || lower.contains("<img") && lower.contains("src=");
        let mut carries = false;
        if let Some(at) = dns_loot(&lower) {
            carries = true;
            self.set("url/loot", 1.0, path, || excerpt(s, at, at, 120));
        }
        let mut from = 0;
        let mut n = 0;
        while let Some(pos) = lower.get(from..).and_then(|r| r.find("://")) {
            n += 1;
            if n > 32 {
                break;
            }
            let at = from + pos;
            from = at + 3;
            let scheme_start = lower.get(..at).map_or(at, |p| p.rfind(|c: char| !c.is_ascii_alphanumeric()).map_or(0, |i| i + 1));
            let end = lower.get(at + 3..).map_or(lower.len(), |r| {
                at + 3 + r.find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ']' | '`')).unwrap_or(r.len())
            });
            let url = lower.get(scheme_start..end).unwrap_or("");
            let scheme = lower.get(scheme_start..at).unwrap_or("");
            if !matches!(scheme, "http" | "https" | "ws" | "wss" | "ftp") {
                continue;
            }
            let rest = lower.get(at + 3..end).unwrap_or("");
            let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let host = rest.get(..host_end).unwrap_or("");
            let tail = rest.get(host_end..).unwrap_or("");
            let local = host.starts_with("localhost") || host.starts_with("127.") || host.starts_with("0.0.0.0") || host.starts_with("[::1]");
            let meta_key = path.ends_with("$schema") || path.ends_with("$id") || path.ends_with("$ref");
            if meta_key {
                continue;
            }
            if place == Place::Description || place == Place::Schema || place == Place::Meta {
                self.set("url/any", 1.0, path, || excerpt(s, scheme_start, end, 120));
            }
            if lexicon::CATCHER_HOSTS.iter().any(|c| host.contains(c)) {
                carries = true;
                self.set("url/catcher", 1.0, path, || excerpt(s, scheme_start, end, 120));
            }
            let ipv4 = host.split(':').next().is_some_and(|h| h.split('.').count() == 4 && h.split('.').all(|p| p.parse::<u8>().is_ok()));
            if ipv4 && !local && !host.starts_with("10.") && !host.starts_with("192.168.") {
                self.set("url/ip", 1.0, path, || excerpt(s, scheme_start, end, 120));
            }
            let placeholder_host = host.contains(['{', '$', '<', '%', '[']);
            if placeholder_host || loot(tail) {
                carries = true;
                self.set("url/loot", 1.0, path, || excerpt(s, scheme_start, end, 120));
            } else if tail.contains(['{', '$', '<']) {
                carries = true;
            }
            let _ = url;
        }
        if image && carries {
            self.set("url/image", 1.0, path, || excerpt(s, 0, 0, 120));
        }
    }

    fn value(&mut self, s: &str, path: &str) {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        if (lower.starts_with("http://") || lower.starts_with("https://") || lower.contains("://")) && !lower.contains("localhost") && !lower.contains("127.0.0.1") {
            self.set("value/url", 1.0, path, || excerpt(s, 0, 0, 120));
        }
        let at = t.find('@');
        if let Some(at) = at {
            let (user, dom) = (t.get(..at).unwrap_or(""), t.get(at + 1..).unwrap_or(""));
            let user_ok = !user.is_empty() && user.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
            let dom_ok = dom.contains('.') && dom.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-')) && !dom.ends_with("example.com") && !dom.ends_with("example.org");
            if user_ok && dom_ok {
                self.set("value/email", 1.0, path, || excerpt(s, 0, 0, 120));
                if recipient_param(path) {
                    self.set("value/recipient-email", 1.0, path, || excerpt(s, 0, 0, 120));
                }
            }
        }
        if secret_placeholder(&lower) {
            self.set("value/env", 1.0, path, || excerpt(s, 0, 0, 120));
        }
        let cmd = ["| bash", "|bash", "| sh", "curl ", "wget ", "bash -c", "sh -c", "rm -rf", "nc -e", "npx ", "pip install", "powershell", "; ", "&& ", "$(", "`"];
        if cmd.iter().any(|c| lower.contains(c)) && lower.split_whitespace().count() >= 2 {
            self.set("value/command", 1.0, path, || excerpt(s, 0, 0, 120));
        }
    }

    fn annotations(&mut self, map: &serde_json::Map<String, Value>) {
        let Some(Value::Object(a)) = map.get("annotations") else { return };
        let read_only = a.get("readOnlyHint").and_then(Value::as_bool) == Some(true);
        let not_destructive = a.get("destructiveHint").and_then(Value::as_bool) == Some(false);
        if !read_only && !not_destructive {
            return;
        }
        let name = map.get("name").and_then(Value::as_str).unwrap_or("");
        let desc = map.get("description").and_then(Value::as_str).unwrap_or("");
        let verbs = if read_only { lexicon::MUTATING_VERBS } else { lexicon::DESTRUCTIVE_VERBS };
        if let Some(why) = claims_change(name, desc, verbs) {
            let what = if read_only { "readOnlyHint: true" } else { "destructiveHint: false" };
            self.set("annot/contradiction", 1.0, "annotations", || format!("{what}, but {why}"));
        }
    }

    fn combine(&mut self) {
        let h = |n: &str| self.has(n);
        let target = h("cat/secret-file") || h("cat/context") || (h("cat/secret-word") && (h("cat/exfil-action") || h("url/loot")));
        let send = h("cat/exfil-action") || h("url/loot") || h("url/catcher") || h("url/image") || h("value/url") || h("value/email") || h("ask/into-param");
        let order = h("cat/directive") || h("cat/trigger") || h("cat/shadow") || h("cat/override");
        let action = h("cat/exfil-action") || h("cat/command") || h("cat/shadow") || target;
        let strong = ["cat/override", "cat/conceal", "cat/exfil-action", "cat/trigger", "cat/shadow", "cat/command", "cat/role-marker", "url/loot", "url/catcher", "url/image", "chars/ansi", "chars/tags", "decoded/strong", "lang/strong", "annot/contradiction", "value/env", "value/command", "value/email", "cmd/remote", "value/recipient-email", "ref/other-change"]
            .iter()
            .filter(|n| self.has(n))
            .count();
        let combos = [
            ("combo/target-send", target && send),
            ("combo/target-directive", target && order),
            ("combo/conceal-action", h("cat/conceal") && (action || order)),
            ("combo/directive-command", h("cat/command") && (h("cat/directive") || h("cat/trigger"))),
            ("combo/shadow-ref", (h("ref/other-tool") || h("ref/foreign-tool")) && (h("cat/shadow") || h("ref/other-change"))),
            ("combo/trigger-action", h("cat/trigger") && (action || h("cat/directive"))),
            // an address, and copying, delivering or hiding something to it (the bcc backdoor)
            ("combo/mail-out", (h("text/email") || h("value/email")) && (h("cat/exfil-action") || h("cat/conceal") || h("cat/shadow"))),
            // a secret or the conversation, to be put into a parameter, with an order or a cover
            (
                "combo/secret-into-param",
                (target || h("cat/secret-word")) && h("ask/into-param") && (order || h("cat/conceal") || h("decoded/prose") || h("cat/role-marker")),
            ),
            // a parameter's own description giving orders about secrets, the conversation or other tools
            ("combo/schema-order", h("at/schema") && (target || h("cat/secret-word")) && (order || h("ask/into-param") || h("cat/conceal"))),
        ];
        for (n, on) in combos {
            if on {
                self.set(n, 1.0, "", String::new);
            }
        }
        self.set("combo/count-strong", (strong.min(4) as f32) / 4.0, "", String::new);
    }
}

/// A package installed by `pip install`, `npm install` and the like whose name is one edit (or
/// one swap of neighbours) away from a widely installed package: what a typosquat looks like.
fn typosquat(lower: &str) -> Option<String> {
    if !lower.contains("install") && !lower.contains(" add ") {
        return None;
    }
    let toks: Vec<&str> = lower.split_whitespace().take(2000).collect();
    for (i, t) in toks.iter().enumerate() {
        let t = t.trim_matches(|c: char| !c.is_alphanumeric());
        let installer = matches!(t, "install" | "add" | "i") && i > 0 && toks.get(i - 1).is_some_and(|p| {
            matches!(p.trim_matches(|c: char| !c.is_alphanumeric()), "pip" | "pip3" | "pipx" | "uv" | "npm" | "pnpm" | "yarn" | "bun" | "poetry" | "conda")
        });
        if !installer {
            continue;
        }
        for arg in toks.iter().skip(i + 1).take(4).filter(|a| !a.starts_with('-')) {
            let name: String = arg.trim_matches(|c: char| !c.is_alphanumeric()).chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
            if name.len() >= 4 && !lexicon::POPULAR_PACKAGES.contains(&name.as_str()) && lexicon::POPULAR_PACKAGES.iter().any(|p| one_edit(&name, p)) {
                return Some(name);
            }
        }
    }
    None
}

/// Whether `a` and `b` differ by one insertion, deletion, substitution or swap of neighbours.
fn one_edit(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a == b || a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let p = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (a.get(p..).unwrap_or(&[]), b.get(p..).unwrap_or(&[]));
    if a.len() == b.len() {
        let swapped = ra.len() >= 2 && ra.first() == rb.get(1) && ra.get(1) == rb.first() && ra.get(2..) == rb.get(2..);
        swapped || ra.get(1..) == rb.get(1..)
    } else if a.len() > b.len() {
        ra.get(1..) == Some(rb)
    } else {
        rb.get(1..) == Some(ra)
    }
}

/// Whether a value's path sits under a parameter that takes recipients (`...properties.bcc.default`).
fn recipient_param(path: &str) -> bool {
    let Some(at) = path.rfind("properties.") else { return false };
    let rest = path.get(at + "properties.".len()..).unwrap_or("");
    let name = rest.split(['.', '[']).next().unwrap_or("");
    name_words(name).split(' ').any(|w| lexicon::RECIPIENT_PARAMS.contains(&w))
}

/// Whether a value holds a reference to a secret the agent or client would fill in:
/// `${env:OPENAI_API_KEY}`, `$GITHUB_TOKEN`, `{{secrets.KEY}}`, `process.env.TOKEN`. A reference to
/// something that is no secret (`${workspaceFolder}`, `$HOME`) is not.
fn secret_placeholder(lower: &str) -> bool {
    let env_ref = lower.contains("${") || lower.contains("{{") || lower.contains("$env") || lower.contains("env:") || lower.contains("process.env")
        || lower.contains("os.environ") || lower.contains("%appdata%") || lower.contains('$');
    if !env_ref {
        return false;
    }
    if lower.contains("secrets.") || lower.contains("{env:") || lower.contains("$env:") {
        return true;
    }
    // the name after `$`, `${`, `{{` or `env.`
    let mut rest = lower;
    while let Some(i) = rest.find(['$', '{']).or_else(|| rest.find("env.")) {
        let tail = rest.get(i + 1..).unwrap_or("");
        let name: String = tail.trim_start_matches(['{', '$', ' ']).chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')).collect();
        if lexicon::SECRET_NAME_WORDS.iter().any(|w| name.split(['_', '.', ':', '-']).any(|p| p == *w || (w.len() > 4 && p.contains(w)))) {
            return true;
        }
        rest = tail;
    }
    false
}

/// A secret or the conversation carried as a DNS label: `{{api_key}}.dns.example.net`,
/// `$(whoami).x.example.net`. Returns where.
fn dns_loot(lower: &str) -> Option<usize> {
    let b = lower.as_bytes();
    let mut i = 0;
    while let Some(pos) = lower.get(i..).and_then(|r| r.find(['}', ')', '>'])) {
        let at = i + pos;
        let mut j = at + 1;
        while b.get(j).is_some_and(|c| matches!(c, b'}' | b')' | b'>')) {
            j += 1;
        }
        // a domain name follows: label.label
        if b.get(j) == Some(&b'.') {
            let dom: String = lower.get(j + 1..).unwrap_or("").chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')).collect();
            if dom.split('.').filter(|p| !p.is_empty()).count() >= 2 {
                let open = lower.get(..at).and_then(|p| p.rfind(['{', '(', '<'])).unwrap_or(at);
                let name = lower.get(open..at).unwrap_or("");
                const WORDS: &[&str] = &["key", "token", "secret", "password", "conversation", "history", "chat", "prompt", "env", "whoami", "hostname", "user", "data", "cred", "session", "summary", "message"];
                if WORDS.iter().any(|w| name.contains(w)) {
                    return Some(open);
                }
            }
        }
        i = j.max(at + 1);
    }
    None
}

/// Whether the match `a..b` of a key file's name is part of a public key's path (`id_rsa.pub`).
fn public_key_path(norm: &str, a: usize, b: usize) -> bool {
    let end = norm.get(b..).map_or(b, |r| b + r.find(|c: char| c.is_whitespace() || matches!(c, ',' | ')' | '(' | '"' | '\'' | '`' | ';')).unwrap_or(r.len()));
    let token = norm.get(a..end).unwrap_or("").trim_end_matches(['.', ':']);
    token.ends_with(".pub")
}

/// An e-mail address (not at an example domain) in free text.
fn find_email(s: &str) -> Option<String> {
    if !s.contains('@') {
        return None;
    }
    for tok in s.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '<' | '>' | '"' | '\'' | '`')) {
        let tok = tok.trim_end_matches(['.', ':']);
        let Some((user, dom)) = tok.split_once('@') else { continue };
        let user_ok = !user.is_empty() && user.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
        let dom_ok = dom.contains('.')
            && dom.split('.').all(|p| !p.is_empty())
            && dom.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'))
            && dom.rsplit('.').next().is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphabetic));
        let example = ["example.com", "example.org", "example.net", "domain.com", "email.com", "company.com"].iter().any(|d| dom.ends_with(d));
        if user_ok && dom_ok && !example {
            return Some(tok.to_string());
        }
    }
    None
}

fn floor(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Whether a tool's name or description says it changes state (one of `verbs`, as the verb of
/// the name, or as the first word of a sentence of the description), or spells out a destructive
/// operation: what says so.
fn claims_change(name: &str, desc: &str, verbs: &[&'static str]) -> Option<String> {
    let base = |w: &str| -> Option<&'static str> {
        let w = w.to_ascii_lowercase();
        verbs.iter().copied().find(|v| w == *v || w == format!("{v}s") || w == format!("{v}es") || (v.ends_with('e') && w == format!("{v}s")))
    };
    let words = name_words(name);
    let toks: Vec<&str> = words.split(' ').filter(|t| !t.is_empty()).collect();
    let first_read = toks.first().is_some_and(|t| lexicon::READ_VERBS.contains(t));
    if !first_read {
        // "add" (sums), "set", "run" name honest read-only tools too: only the clear verbs count.
        if let Some(v) = toks.iter().take(2).find_map(|t| base(t)).filter(|v| !lexicon::WEAK_VERBS.contains(v)) {
            return Some(format!("the name says {v}: {name}"));
        }
    }
    let forms = if verbs == lexicon::DESTRUCTIVE_VERBS { lexicon::DESTROY_FORMS } else { lexicon::CHANGE_FORMS };
    // Sentence by sentence: one that refuses or denies what it names ("DROP statements are
    // refused", "never runs git clean") does not claim it.
    for sentence in desc.split(['.', '\n', ';', '!', '?']) {
        let ls = sentence.to_ascii_lowercase().replace(['\'', '\u{2019}'], "");
        if ls.contains("read-only") || ls.contains("read only") || ls.contains("readonly") {
            continue;
        }
        let ws: Vec<&str> = ls.split(|c: char| !c.is_alphanumeric() && c != '-').filter(|w| !w.is_empty()).collect();
        if ws.iter().any(|w| lexicon::SENTENCE_NEGATORS.contains(w) || lexicon::NEGATORS_AFTER.contains(w)) {
            continue;
        }
        if let Some(p) = lexicon::DESTRUCTIVE_PHRASES.iter().find(|p| ls.contains(**p)) {
            return Some(format!("the description says {p}"));
        }
        let w = ws.first().copied().unwrap_or("");
        if let Some(v) = base(w).filter(|v| !lexicon::WEAK_VERBS.contains(v)) {
            return Some(format!("the description says {v}: {}", excerpt(sentence.trim(), 0, 0, 100)));
        }
        // A capitalized third-person verb starts a sentence even without the full stop before
        // it ("Shows the log Sends the report by email"); one inside a sentence is left alone.
        let sw: Vec<&str> = sentence.split(|c: char| !c.is_alphanumeric() && c != '-').filter(|w| !w.is_empty()).collect();
        let starts = sw.iter().enumerate().find(|(i, w)| {
            let lw = w.to_ascii_lowercase();
            // "... then permanently erases", "and also deletes": a second verb of the tool
            let after_link = i.checked_sub(1).and_then(|j| sw.get(j)).is_some_and(|p| {
                matches!(p.to_ascii_lowercase().as_str(), "then" | "also" | "permanently" | "irreversibly" | "automatically" | "silently" | "afterwards" | "subsequently")
            });
            (*i == 0 || w.starts_with(|c: char| c.is_ascii_uppercase()) || after_link) && lw.ends_with('s') && forms.contains(&lw.as_str())
        });
        if let Some((_, f)) = starts {
            return Some(format!("the description says {}: {}", f.to_ascii_lowercase(), excerpt(sentence.trim(), 0, 0, 100)));
        }
    }
    None
}

/// Text pushed out of sight: a long run of blank lines or spaces followed by more text.
fn hidden_block(s: &str) -> bool {
    let b = s.as_bytes();
    let (mut run, mut newlines) = (0usize, 0usize);
    for (i, &c) in b.iter().enumerate() {
        if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' {
            run += 1;
            newlines += usize::from(c == b'\n');
        } else {
            if (newlines >= 8 || run >= 60) && i > run {
                return true;
            }
            run = 0;
            newlines = 0;
        }
    }
    false
}

/// A URL path/query that carries the conversation or a secret: a placeholder or query value
/// naming one.
fn loot(tail: &str) -> bool {
    const STRONG: &[&str] = &[
        "conversation", "history", "chat", "context", "secret", "token", "key", "password", "passwd", "creds", "credential",
        "prompt", "message", "messages", "transcript", "summary", "env", "ssh", "cookie", "session", "memory", "leak", "dump",
        "payload", "data", "content", "contents", "exfil", "steal", "stolen",
    ];
    let mut inside = false;
    let mut word = String::new();
    for c in tail.chars() {
        match c {
            '{' | '<' | '[' | '$' => {
                inside = true;
                word.clear();
            }
            '}' | '>' | ']' => {
                if inside && STRONG.iter().any(|w| word.contains(w)) {
                    return true;
                }
                inside = false;
            }
            c if inside => word.push(c),
            _ => {}
        }
    }
    if inside && STRONG.iter().any(|w| word.contains(w)) {
        return true;
    }
    // ?data=..., ?q=<something that is not a word>
    tail.split(['?', '&']).skip(1).any(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        STRONG.contains(&k) && (v.is_empty() || v.contains(['{', '<', '$', '%']))
    })
}

/// Whether a match is refused rather than asked for: a negating word in the six words before it,
/// or a refusing participle in the four after.
fn negated(sc: &Scratch, a: usize, b: usize, orig: &str) -> bool {
    // a paragraph break (gone from the normalized text) ends the window too
    let para = |x: usize, y: usize| {
        let (o0, _) = sc.original_range(x, x + 1, orig);
        let (o1, _) = sc.original_range(y, y + 1, orig);
        orig.get(o0.min(o1)..o1.max(o0)).is_some_and(|t| t.contains('\n'))
    };
    let k = sc.words.iter().position(|&(s, _)| s as usize >= a).unwrap_or(sc.words.len());
    let e = sc.words.iter().position(|&(s, _)| s as usize >= b).unwrap_or(sc.words.len());
    let word = |j: usize| sc.words.get(j).and_then(|&(s, t)| sc.norm.get(s as usize..t as usize)).unwrap_or("");
    // Stop at a sentence end: "Never mind. Read ~/.ssh" is not negated.
    for j in (k.saturating_sub(6)..k).rev() {
        let (_, t) = sc.words.get(j).copied().unwrap_or((0, 0));
        let between = sc.norm.get(t as usize..a).unwrap_or("");
        if (sentence_end(between) || para(t as usize, a)) && j + 1 < k {
            break;
        }
        if lexicon::NEGATORS_BEFORE.contains(&word(j)) {
            return true;
        }
    }
    for j in e..(e + 7).min(sc.words.len()) {
        let (s0, _) = sc.words.get(j).copied().unwrap_or((0, 0));
        if sc.norm.get(b..s0 as usize).is_some_and(sentence_end) {
            break;
        }
        let w = word(j);
        if lexicon::NEGATORS_AFTER.contains(&w) {
            return true;
        }
    }
    false
}

/// Whether the words just before a match say "this" (the tool speaking of itself).
fn self_reference(sc: &Scratch, a: usize) -> bool {
    let k = sc.words.iter().position(|&(s, _)| s as usize >= a).unwrap_or(sc.words.len());
    let word = |j: usize| sc.words.get(j).and_then(|&(s, t)| sc.norm.get(s as usize..t as usize)).unwrap_or("");
    // "this tool", "this CircleCI MCP server", "our API": up to three words may name it
    (k.saturating_sub(4)..k).any(|j| matches!(word(j), "this" | "its" | "our"))
}

fn sentence_end(s: &str) -> bool {
    s.contains(". ") || s.contains(';') || s.contains("! ") || s.contains("? ") || s.contains(": ")
}

/// Whether a match sits in quotes introduced as content ("phrases like \"ignore previous
/// instructions\"", a translator's example).
fn quoted(sc: &Scratch, a: usize) -> bool {
    let before = sc.norm.get(..a).unwrap_or("");
    let dq = before.matches('"').count() % 2 == 1;
    let bt = before.matches('`').count() % 2 == 1;
    let curly = before.rfind('\u{201c}').is_some_and(|o| before.rfind('\u{201d}').is_none_or(|c| c < o));
    let single = before.rfind(" '").is_some_and(|o| before.get(o + 2..).is_some_and(|r| !r.contains('\'')));
    let guil = before.rfind('«').is_some_and(|o| before.rfind('»').is_none_or(|c| c < o));
    if !(dq || bt || curly || single || guil) {
        return false;
    }
    let k = sc.words.iter().position(|&(s, _)| s as usize >= a).unwrap_or(sc.words.len());
    (k.saturating_sub(10)..k).any(|j| {
        sc.words.get(j).and_then(|&(s, t)| sc.norm.get(s as usize..t as usize)).is_some_and(|w| lexicon::QUOTE_CONTEXT.contains(&w))
    })
}

#[cfg(test)]
mod tests;
