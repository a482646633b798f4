//! Security inspection of what MCP servers tell agents: tool poisoning in `tools/list`
//! (`prompts/list`, `resources/list`), prompt injection in tool results, changed definitions
//! (rug pulls), cross-server shadowing and protocol violations. Pure: bytes in, a verdict out.
//!
//! # API (what the filter calls)
//!
//! ```text
//! // Once, at configuration time (`inspection` block of the plugin config; errors name the field):
//! InspectionConfig::read(&Val) / from_json(bytes) -> Result<InspectionConfig, ConfigError>  // unknown fields refused
//! InspectionConfig::compile(&self, at: &str) -> Result<Inspector, ConfigError>   // at = "inspection"
//! Inspector::from_json(bytes: &[u8]) -> Result<Inspector, ConfigError>           // standalone document
//! Inspector::builtin() -> Inspector                                              // defaults
//!
//! // Per answer (one JSON-RPC message: a JSON body, or one SSE event's data):
//! inspect_tools_list(&Inspector, server: &str, body: &[u8]) -> ListVerdict
//! inspect_tools_list_pinned(&Inspector, server, body, &mut ToolPins) -> ListVerdict  // + rug pulls
//! inspect_list(&Inspector, server, ListKind, body) -> ListVerdict   // prompts/list, resources/list, ...
//! inspect_tool_result(&Inspector, server, tool: Option<&str>, body) -> ResultVerdict
//! ListVerdict { kind, action, findings: Vec<Finding>, items: Vec<ItemPrint>,
//!               stripped: Vec<String>, rewritten: Option<Vec<u8>> }
//! ResultVerdict { action, findings }
//! Action: Pass < Record < Strip < Block < Quarantine     // what the policy decided
//!
//! // Pins (rug pulls) and shadowing; ServerPins::encode/decode is the shared-data form:
//! ToolPins::new(per_server_cap, max_servers); observe(server, tool, Fingerprint) -> Option<PinChange>
//! ToolPins::{load_server, encode_server, shadowing}; detect_shadowing(lists) -> Vec<Shadowed>
//! Inspector::shadowing_findings(&[Shadowed]) -> Vec<Finding>
//! Fingerprint::of(&serde_json::Value) -> Fingerprint   // 16 bytes of SHA-256, Display = 32 hex
//!
//! // Protocol violations for the security channel (reuses mcp::jsonrpc's reader):
//! protocol::check_response(expected_ids: Option<&[Value]>, body, limit) -> Option<Violation>
//! protocol::from_failure(FailureKind) -> Option<Violation>
//! Inspector::violation(server, Violation, detail: &str) -> Option<Finding>
//!
//! trust::wire::SecurityEvent::from(&Finding)   // the aggregator's form (in `trust::sidecar`)
//! ```
//!
//! What the filter does with a verdict: `Pass`/`Record` forward the answer (report findings);
//! `Strip` forwards `rewritten` (the same message without the offending items); `Block` answers
//! with a degraded response; `Quarantine` blocks and asks the aggregator to quarantine the
//! server (a critical event does that anyway). For tool results `Strip` is taken as `Block`.
//!
//! Per-answer cost: one JSON parse, one normalization and word scan per string, a fingerprint
//! per listed item; allocations beyond the parse are the reused scratch buffers, the item list,
//! and findings or a rewrite when there are any. See docs/SECURITY.md for the rule set.

pub mod change;
mod config;
pub mod detect;
mod fingerprint;
mod list;
pub mod pins;
pub mod protocol;
mod result;
pub mod rules;
mod text;
pub mod verdict;

pub use config::{DetectorConfig, InspectionConfig, PinPolicy, PolicyConfig, RugPullConfig};
pub use fingerprint::Fingerprint;
pub use list::{
    inspect_list, inspect_tool, inspect_tools_list, inspect_tools_list_checked, inspect_tools_list_pinned, ItemPrint,
    ListKind, ListVerdict, ToolVerdict,
};
pub use verdict::{MeshVerdict, MeshVerdicts};
pub use pins::{capability_print, detect_shadowing, PinChange, ServerPins, Shadowed, ToolPins};
pub use protocol::Violation;
pub use result::{inspect_tool_result, ResultVerdict};

use crate::severity::Severity;
use rules::{FieldClass, RuleKind};
use text::{Matcher, Scratch};

/// What the policy decides for an answer, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Nothing found.
    Pass,
    /// Report the findings, forward the answer.
    Record,
    /// Forward the answer without the offending tools (prompts, resources).
    Strip,
    /// Answer the agent with a degraded response instead.
    Block,
    /// Block, and ask the aggregator to quarantine the server.
    Quarantine,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Record => "record",
            Action::Strip => "strip",
            Action::Block => "block",
            Action::Quarantine => "quarantine",
        }
    }
}

/// One security signal, with bounded, redacted evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Rule id, e.g. `poison/ignore-instructions`, `pin/tool-changed`, `protocol/id-mismatch`.
    pub rule: String,
    pub severity: Severity,
    pub server: String,
    /// The tool (prompt, resource) it is about, if any.
    pub tool: Option<String>,
    /// Where in the definition or result (`description`, `inputSchema.properties.path.description`,
    /// `content[0].text`); a ` (hidden)` suffix marks text decoded from tag characters or base64.
    pub field: String,
    /// An excerpt around the match: at most `evidence_max_chars` characters, invisible characters
    /// shown as `<U+XXXX>`, key-like runs replaced by `[redacted]`.
    pub evidence: String,
    /// Fingerprint of the definition (the new one for a pin change).
    pub fingerprint: Option<Fingerprint>,
    /// The pinned fingerprint, for `pin/tool-changed`.
    pub old_fingerprint: Option<Fingerprint>,
}

/// Longest field path kept in a finding.
pub const MAX_FIELD_CHARS: usize = 128;
/// Most findings kept per answer (the decision still sees every match).
pub const MAX_FINDINGS: usize = 256;

/// A rule ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub result_severity: Option<Severity>,
    pub enabled: bool,
    /// [`FieldClass::bit`]s the rule reads.
    pub fields: u8,
    pub min_len: usize,
    /// Configured by the operator (added, or its severity set): decides by its severity even
    /// when the detector weighs the built-in rules' hits.
    pub decisive: bool,
}

/// Limits and switches of an [`Inspector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Descriptions longer than this (in characters) hit `poison/long-description`.
    pub max_description_chars: usize,
    /// List answers larger than this are not inspected (`protocol/oversized-body`).
    pub max_list_bytes: usize,
    /// Tool results larger than this are not inspected (`protocol/oversized-body`).
    pub max_result_bytes: usize,
    /// Tools pinned per server.
    pub max_pins_per_server: usize,
    /// Longest evidence excerpt, in characters.
    pub evidence_max_chars: usize,
    /// Inspect tool results at all.
    pub inspect_results: bool,
}

/// The compiled rule set, limits and policy: built once, shared read-only by every request.
#[derive(Debug, Clone)]
pub struct Inspector {
    pub enabled: bool,
    pub limits: Limits,
    version: String,
    rules: Vec<Rule>,
    matcher: Matcher,
    /// Action per severity, low to critical.
    policy: [Action; 4],
    /// The per-tool evidence score (`None`: the phrase rules alone decide).
    detector: Option<std::sync::Arc<detect::Detector>>,
    /// Rug-pull policy: the default and per server (sorted by name: a binary search, and no
    /// map type of its own in the `.wasm`).
    rug_pull: (PinPolicy, Vec<(String, PinPolicy)>),
}

fn sev_index(s: Severity) -> usize {
    match s {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

impl Inspector {
    /// The rule set's version (`default_rules.json`'s, with `+local` when the configuration
    /// changed rules).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What the policy does with a finding of this severity.
    pub fn action_for(&self, severity: Severity) -> Action {
        self.policy.get(sev_index(severity)).copied().unwrap_or(Action::Record)
    }

    /// The evidence detector, when enabled.
    pub fn detector(&self) -> Option<&detect::Detector> {
        self.detector.as_deref()
    }

    /// What a changed definition of `server`'s tools gets.
    pub fn pin_policy(&self, server: &str) -> PinPolicy {
        let per_server = &self.rug_pull.1;
        match per_server.binary_search_by(|(name, _)| name.as_str().cmp(server)) {
            Ok(i) => per_server.get(i).map_or(self.rug_pull.0, |(_, p)| *p),
            Err(_) => self.rug_pull.0,
        }
    }

    /// Ids and severities of the enabled rules.
    pub fn rules(&self) -> impl Iterator<Item = (&str, Severity)> {
        self.rules.iter().filter(|r| r.enabled).map(|r| (r.id.as_str(), r.severity))
    }

    fn rule_of_kind(&self, kind: RuleKind) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().find(|(_, r)| r.kind == kind && r.enabled)
    }

    fn rule_by_id(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id && r.enabled)
    }

    /// Findings for tools several servers offer: one per (tool, server).
    pub fn shadowing_findings(&self, shadowed: &[Shadowed]) -> Vec<Finding> {
        let Some((_, rule)) = self.rule_of_kind(RuleKind::Shadowing) else { return Vec::new() };
        let mut out = Vec::new();
        for s in shadowed {
            for server in &s.servers {
                let others: Vec<&str> = s.servers.iter().filter(|o| *o != server).map(String::as_str).collect();
                out.push(Finding {
                    rule: rule.id.clone(),
                    severity: rule.severity,
                    server: server.clone(),
                    tool: Some(text::excerpt(&s.tool, 0, 0, MAX_FIELD_CHARS)),
                    field: "name".into(),
                    evidence: text::excerpt(&format!("also offered by {}", others.join(", ")), 0, 0, self.limits.evidence_max_chars),
                    fingerprint: None,
                    old_fingerprint: None,
                });
            }
        }
        out
    }
}

/// A field path, built on the stack while walking and rendered only for a finding.
#[derive(Clone, Copy)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
    Hidden,
}

#[derive(Clone, Copy)]
pub(crate) struct Path<'a> {
    pub parent: Option<&'a Path<'a>>,
    pub seg: Seg<'a>,
}

impl<'a> Path<'a> {
    pub fn root(key: &'a str) -> Path<'a> {
        Path { parent: None, seg: Seg::Key(key) }
    }

    pub fn child(&'a self, seg: Seg<'a>) -> Path<'a> {
        Path { parent: Some(self), seg }
    }

    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut at = Some(self);
        while let Some(p) = at {
            segs.push(p.seg);
            at = p.parent;
        }
        let mut out = String::new();
        for seg in segs.into_iter().rev() {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
                Seg::Hidden => out.push_str(" (hidden)"),
            }
        }
        text::excerpt(&out, 0, 0, MAX_FIELD_CHARS)
    }
}

/// Most strings read per answer, and deepest nesting walked.
const MAX_STRINGS: usize = 50_000;
const MAX_DEPTH: usize = 32;

/// The first enabled rule of each kind `Cx::scan` checks on every string.
#[derive(Clone, Copy)]
struct Specials {
    invisible: Option<usize>,
    bidi: Option<usize>,
    tags: Option<usize>,
    length: Option<usize>,
    /// With its `min_len`.
    base64: Option<(usize, usize)>,
}

impl Specials {
    fn of(insp: &Inspector) -> Specials {
        let idx = |kind| insp.rule_of_kind(kind).map(|(i, _)| i);
        Specials {
            invisible: idx(RuleKind::Invisible),
            bidi: idx(RuleKind::Bidi),
            tags: idx(RuleKind::TagChars),
            length: idx(RuleKind::Length),
            base64: insp.rule_of_kind(RuleKind::Base64).map(|(i, r)| (i, r.min_len)),
        }
    }
}

/// The state of one inspection call.
pub(crate) struct Cx<'i> {
    insp: &'i Inspector,
    server: &'i str,
    for_result: bool,
    sc: Scratch,
    pub findings: Vec<Finding>,
    /// Rules that already hit the current item (one finding per rule per item).
    done: Vec<bool>,
    item: Option<String>,
    item_fp: Option<Fingerprint>,
    /// The rule of each per-string special kind (`rule_of_kind`, looked up once per call).
    specials: Specials,
    /// Most severe hit of the current item, and of anything outside items.
    pub item_max: Option<Severity>,
    pub other_max: Option<Severity>,
    /// Most severe hit of any item.
    pub worst_item: Option<Severity>,
    strings: usize,
    /// While a listed item is read with the detector on: phrase and character rule hits are
    /// evidence for its score (recorded at low severity), not decisions of their own.
    pub defer: bool,
    /// High and medium phrase-rule hits of the current item (features of the score).
    pub legacy: [u32; 2],
    /// Items stripped whatever the policy says: changed definitions held, and definitions the
    /// aggregator's scan condemned.
    pub held: usize,
    /// The aggregator's verdicts by fingerprint (tools lists).
    pub mesh: Option<&'i verdict::MeshVerdicts>,
}

impl<'i> Cx<'i> {
    pub fn new(insp: &'i Inspector, server: &'i str, for_result: bool) -> Self {
        Cx {
            insp,
            server,
            for_result,
            sc: Scratch::default(),
            findings: Vec::new(),
            done: vec![false; insp.rules.len()],
            item: None,
            item_fp: None,
            specials: Specials::of(insp),
            item_max: None,
            other_max: None,
            worst_item: None,
            strings: 0,
            defer: false,
            legacy: [0, 0],
            held: 0,
            mesh: None,
        }
    }

    /// Starts a new item (tool, prompt, resource, or a tool result).
    pub fn begin_item(&mut self, name: Option<&str>, fp: Option<Fingerprint>) {
        self.done.iter_mut().for_each(|d| *d = false);
        self.item = name.map(|n| text::excerpt(n, 0, 0, MAX_FIELD_CHARS));
        self.item_fp = fp;
        self.item_max = None;
        self.legacy = [0, 0];
    }

    fn severity(&self, r: &Rule) -> Option<Severity> {
        if self.for_result {
            r.result_severity
        } else {
            Some(r.severity)
        }
    }

    /// Records a finding of rule `idx` for the current item.
    fn hit(&mut self, idx: usize, field: String, evidence: String, old: Option<Fingerprint>) {
        let Some(r) = self.insp.rules.get(idx) else { return };
        let Some(mut sev) = self.severity(r) else { return };
        if let Some(d) = self.done.get_mut(idx) {
            *d = true;
        }
        // Tag characters spell text nobody sees: no innocent explanation, they decide alone.
        if self.defer && !r.decisive && !matches!(r.kind, RuleKind::TagChars | RuleKind::Pin) {
            // `<IMPORTANT>` blocks are also how honest servers flag a warning: weak evidence.
            let weak = r.id == "poison/hidden-block";
            match sev {
                Severity::High | Severity::Critical if !weak => self.legacy[0] += 1,
                Severity::High | Severity::Critical => self.legacy[1] += 1,
                Severity::Medium => self.legacy[1] += 1,
                Severity::Low => {}
            }
            sev = Severity::Low;
        }
        self.item_max = self.item_max.max(Some(sev));
        self.worst_item = self.worst_item.max(Some(sev));
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                rule: r.id.clone(),
                severity: sev,
                server: self.server.to_string(),
                tool: self.item.clone(),
                field,
                evidence,
                fingerprint: self.item_fp,
                old_fingerprint: old,
            });
        }
    }

    /// A finding outside any item (protocol problems of the whole answer).
    pub fn hit_other(&mut self, rule_id: &str, evidence: &str) {
        let Some(r) = self.insp.rule_by_id(rule_id) else { return };
        let sev = r.severity;
        self.other_max = self.other_max.max(Some(sev));
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                rule: r.id.clone(),
                severity: sev,
                server: self.server.to_string(),
                tool: None,
                field: String::new(),
                evidence: text::excerpt(evidence, 0, 0, self.insp.limits.evidence_max_chars),
                fingerprint: None,
                old_fingerprint: None,
            });
        }
    }

    /// The detector's verdict on the current item: its evidence (low) and, when the score
    /// passes a threshold, `detect/tool-poisoning` at the severity the threshold gives.
    pub fn assess(&mut self, value: &serde_json::Value, others: &detect::Others) {
        let Some(det) = self.insp.detector.clone() else { return };
        let a = det.assess_with(value, others, self.legacy);
        let Some(level) = det.level(a.score) else { return };
        let max = self.insp.limits.evidence_max_chars;
        let mut summary: Vec<&str> = a.evidence.iter().map(|e| e.feature).collect();
        summary.dedup();
        let push = |cx: &mut Self, rule: String, sev: Severity, field: String, evidence: String| {
            cx.item_max = cx.item_max.max(Some(sev));
            cx.worst_item = cx.worst_item.max(Some(sev));
            if cx.findings.len() < MAX_FINDINGS {
                cx.findings.push(Finding {
                    rule,
                    severity: sev,
                    server: cx.server.to_string(),
                    tool: cx.item.clone(),
                    field,
                    evidence,
                    fingerprint: cx.item_fp,
                    old_fingerprint: None,
                });
            }
        };
        let head = format!("score {:.1} ({}): {}", a.score, det.version, summary.join(", "));
        push(self, "detect/tool-poisoning".into(), level, String::new(), text::excerpt(&head, 0, 0, max));
        for e in a.evidence.iter().filter(|e| !e.field.is_empty()).take(8) {
            let rule = format!("detect/{}", e.feature.replace('/', "-"));
            push(self, rule, Severity::Low, text::excerpt(&e.field, 0, 0, MAX_FIELD_CHARS), text::excerpt(&e.excerpt, 0, 0, max));
        }
    }

    /// The current item's change is held out of the list until its new fingerprint is cleared.
    pub fn hit_held(&mut self, change: PinChange, why: &str) {
        self.held += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                rule: "pin/tool-held".into(),
                severity: Severity::Medium,
                server: self.server.to_string(),
                tool: self.item.clone(),
                field: String::new(),
                evidence: format!("held until {} is cleared (scanned clean with no new capability, or approved): {why}", change.new),
                fingerprint: Some(change.new),
                old_fingerprint: Some(change.old),
            });
        }
    }

    /// The aggregator's verdict on the current item's definition: a finding at its severity.
    pub fn hit_mesh(&mut self, v: &verdict::MeshVerdict) {
        self.item_max = self.item_max.max(Some(v.severity));
        self.worst_item = self.worst_item.max(Some(v.severity));
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                rule: verdict::MESH_RULE.into(),
                severity: v.severity,
                server: self.server.to_string(),
                tool: self.item.clone(),
                field: String::new(),
                evidence: text::excerpt(&format!("the trust aggregator's scan of this definition: {}", v.rules), 0, 0, self.insp.limits.evidence_max_chars),
                fingerprint: self.item_fp,
                old_fingerprint: None,
            });
        }
    }

    /// A pin change of the current item.
    pub fn hit_pin(&mut self, change: PinChange) {
        if let Some((idx, _)) = self.insp.rule_of_kind(RuleKind::Pin) {
            let ev = format!("definition changed from {} to {}", change.old, change.new);
            self.item_fp = Some(change.new);
            self.hit(idx, String::new(), ev, Some(change.old));
        }
    }

    fn wants(&self, idx: usize, kind: RuleKind, class: FieldClass) -> bool {
        let Some(r) = self.insp.rules.get(idx) else { return false };
        r.enabled
            && r.kind == kind
            && !self.done.get(idx).copied().unwrap_or(true)
            && if self.for_result { r.result_severity.is_some() } else { r.fields & class.bit() != 0 }
    }

    fn special(&self, idx: Option<usize>, kind: RuleKind, class: FieldClass) -> Option<usize> {
        let idx = idx?;
        self.wants(idx, kind, class).then_some(idx)
    }

    /// Walks a JSON value, reading every string (and property names under `properties`).
    pub fn walk(&mut self, v: &serde_json::Value, class: FieldClass, path: &Path<'_>, depth: usize) {
        use serde_json::Value;
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::String(s) => self.scan(s, class, path, false),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, class, &path.child(Seg::Index(i)), depth + 1);
                }
            }
            Value::Object(map) => {
                let properties = matches!(path.seg, Seg::Key("properties"));
                for (k, item) in map {
                    let p = path.child(Seg::Key(k));
                    if properties && class == FieldClass::Schema {
                        self.scan(k, class, &p, false);
                    }
                    self.walk(item, class, &p, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// Runs every rule over one string.
    pub fn scan(&mut self, s: &str, class: FieldClass, path: &Path<'_>, hidden: bool) {
        if s.is_empty() || self.strings >= MAX_STRINGS {
            return;
        }
        self.strings += 1;
        let insp = self.insp;
        let max = insp.limits.evidence_max_chars;
        let mut sc = std::mem::take(&mut self.sc);
        sc.normalize(s);

        let mut hits: Vec<(usize, usize, usize)> = Vec::new();
        {
            let done = &mut self.done;
            let for_result = self.for_result;
            let allowed = |idx: usize| {
                insp.rules.get(idx).is_some_and(|r| {
                    r.enabled
                        && r.kind == RuleKind::Phrase
                        && if for_result { r.result_severity.is_some() } else { r.fields & class.bit() != 0 }
                })
            };
            insp.matcher.scan(&sc, &allowed, done, &mut |idx, a, b| hits.push((idx, a, b)));
        }
        let field = |path: &Path<'_>| if hidden { path.child(Seg::Hidden).render() } else { path.render() };
        for (idx, a, b) in hits {
            let (start, end) = sc.original_range(a, b, s);
            self.hit(idx, field(path), text::excerpt(s, start, end, max), None);
        }

        let stats = sc.stats;
        if stats.invisible > 0 {
            if let Some(idx) = self.special(self.specials.invisible, RuleKind::Invisible, class) {
                let ev = text::excerpt(s, stats.first_invisible, stats.first_invisible, max);
                self.hit(idx, field(path), ev, None);
            }
        }
        if stats.bidi > 0 {
            if let Some(idx) = self.special(self.specials.bidi, RuleKind::Bidi, class) {
                self.hit(idx, field(path), text::excerpt(s, stats.first_bidi, stats.first_bidi, max), None);
            }
        }
        if stats.tags > 0 {
            if let Some(idx) = self.special(self.specials.tags, RuleKind::TagChars, class) {
                self.hit(idx, field(path), text::excerpt(s, stats.first_tag, stats.first_tag, max), None);
            }
        }
        // A string of at most `max_description_chars` bytes has no more characters than that.
        if class == FieldClass::Description && !self.for_result && s.len() > insp.limits.max_description_chars {
            if let Some(idx) = self.special(self.specials.length, RuleKind::Length, class) {
                let n = s.chars().count();
                if n > insp.limits.max_description_chars {
                    let ev = format!("{n} characters (limit {}): {}", insp.limits.max_description_chars, text::excerpt(s, 0, 0, max));
                    self.hit(idx, field(path), text::excerpt(&ev, 0, 0, max), None);
                }
            }
        }
        let mut decoded = None;
        // A run of `min_len` characters needs a string at least that long.
        if let Some((idx, min_len)) = self.specials.base64.filter(|&(_, min_len)| !hidden && s.len() >= min_len) {
            {
                if let Some((a, b)) = text::find_base64(s, min_len) {
                    let bytes = s.get(a..b).and_then(text::decode_base64).unwrap_or_default();
                    let plain = text::printable_text(&bytes).map(str::to_string);
                    if self.wants(idx, RuleKind::Base64, class) {
                        let shown = match &plain {
                            Some(p) => format!("{} chars of base64, decoding to: {}", b - a, text::excerpt(p, 0, 0, max)),
                            None => format!("{} chars of base64: {}", b - a, text::excerpt(s, a, b, max)),
                        };
                        self.hit(idx, field(path), text::excerpt(&shown, 0, 0, max), None);
                    }
                    decoded = plain;
                }
            }
        }
        let tag_text = (!sc.hidden.is_empty()).then(|| sc.hidden.clone());
        self.sc = sc;
        if !hidden {
            if let Some(t) = tag_text {
                self.scan(&t, class, path, true);
            }
            if let Some(d) = decoded {
                self.scan(&d, class, path, true);
            }
        }
    }
}

#[cfg(test)]
mod tests;
