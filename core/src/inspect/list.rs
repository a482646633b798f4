//! `tools/list`, `prompts/list`, `resources/list` (and `resources/templates/list`) answers: every
//! listed item is fingerprinted and its text checked; when the policy says strip, the answer is
//! rewritten without the offending items, every other byte kept as the server sent it.

use super::fingerprint::Fingerprint;
use super::pins::ToolPins;
use super::verdict::MeshVerdicts;
use super::rules::FieldClass;
use super::{Action, Cx, Finding, Inspector, Path};
use crate::severity::Severity;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Which list an answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    /// The list a request method returns, if it is one of these.
    pub fn from_method(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            "resources/templates/list" => Some(ListKind::ResourceTemplates),
            _ => None,
        }
    }

    /// The member of `result` holding the list.
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            ListKind::Tools | ListKind::Prompts => &["name"],
            ListKind::Resources => &["uri", "name"],
            ListKind::ResourceTemplates => &["uriTemplate", "name"],
        }
    }
}

/// One listed item's name (a resource's URI) and fingerprint (for an entry serde_json cannot
/// read, an empty name and the fingerprint of its raw text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemPrint {
    pub name: String,
    pub fingerprint: Fingerprint,
    /// What the definition can do, without wording (see [`super::pins::capability_print`]).
    pub capability: Fingerprint,
    /// A changed definition held out of the list until cleared: its pin stays the old one.
    pub held: bool,
}

/// The verdict on one list answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListVerdict {
    pub kind: ListKind,
    pub action: Action,
    pub findings: Vec<Finding>,
    /// Every listed item, in order (empty when the answer is not a list result).
    pub items: Vec<ItemPrint>,
    /// Names of the items removed by `rewritten`.
    pub stripped: Vec<String>,
    /// The answer to forward instead, when `action` is `Strip`.
    pub rewritten: Option<Vec<u8>>,
}

impl ListVerdict {
    fn pass(kind: ListKind) -> Self {
        ListVerdict { kind, action: Action::Pass, findings: Vec::new(), items: Vec::new(), stripped: Vec::new(), rewritten: None }
    }
}

/// Inspects a `tools/list` answer.
pub fn inspect_tools_list(insp: &Inspector, server: &str, body: &[u8]) -> ListVerdict {
    run(insp, server, ListKind::Tools, body, None, None)
}

/// Inspects a `tools/list` answer and checks every tool against its pin (see [`ToolPins`]).
pub fn inspect_tools_list_pinned(insp: &Inspector, server: &str, body: &[u8], pins: &mut ToolPins) -> ListVerdict {
    run(insp, server, ListKind::Tools, body, Some(pins), None)
}

/// [`inspect_tools_list_pinned`], and every tool whose fingerprint has a verdict of the trust
/// aggregator gets a `mesh/verdict` finding at its severity (see [`super::verdict`]).
pub fn inspect_tools_list_checked(insp: &Inspector, server: &str, body: &[u8], pins: &mut ToolPins, mesh: &MeshVerdicts) -> ListVerdict {
    run(insp, server, ListKind::Tools, body, Some(pins), Some(mesh))
}

/// Inspects any list answer.
pub fn inspect_list(insp: &Inspector, server: &str, kind: ListKind, body: &[u8]) -> ListVerdict {
    run(insp, server, kind, body, None, None)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    jsonrpc: Option<IgnoredAny>,
    #[serde(default)]
    method: Option<IgnoredAny>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ListResult<'a> {
    #[serde(default, borrow)]
    tools: Option<&'a RawValue>,
    #[serde(default, borrow)]
    prompts: Option<&'a RawValue>,
    #[serde(default, borrow)]
    resources: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "resourceTemplates")]
    resource_templates: Option<&'a RawValue>,
}

/// The same message read in one pass, values and all. When serde_json refuses any of it (an entry
/// it cannot read, a list member that is not an array, nesting too deep), the message is read
/// again piece by piece as [`Envelope`] and [`ListResult`] say, which reports each problem.
#[derive(Deserialize)]
struct WholeEnvelope {
    #[serde(default)]
    jsonrpc: Option<IgnoredAny>,
    #[serde(default)]
    method: Option<IgnoredAny>,
    #[serde(default)]
    result: Option<WholeResult>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct WholeResult {
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    prompts: Option<Vec<Value>>,
    #[serde(default)]
    resources: Option<Vec<Value>>,
    #[serde(default, rename = "resourceTemplates")]
    resource_templates: Option<Vec<Value>>,
}

/// Where an item sits in the message text, and what the policy made of it.
struct Span {
    start: usize,
    end: usize,
    name: String,
    max: Option<Severity>,
    /// A changed definition held until cleared: stripped whatever the policy says.
    held: bool,
}

/// The list array's place in the message text and its items (`placed`: with their places; when
/// not, they are found only if the answer is to be rewritten).
struct Located {
    start: usize,
    end: usize,
    items: Vec<Span>,
    placed: bool,
}

/// Byte offset of `inner` within `outer` (RawValue borrows from the input).
fn offset_in(outer: &str, inner: &str) -> Option<usize> {
    let o = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (o + inner.len() <= outer.len()).then_some(o)
}

fn run(insp: &Inspector, server: &str, kind: ListKind, body: &[u8], mut pins: Option<&mut ToolPins>, mesh: Option<&MeshVerdicts>) -> ListVerdict {
    if !insp.enabled {
        return ListVerdict::pass(kind);
    }
    let mut cx = Cx::new(insp, server, false);
    cx.mesh = mesh.filter(|m| !m.is_empty());
    let mut verdict = ListVerdict::pass(kind);
    if body.len() > insp.limits.max_list_bytes {
        cx.hit_other("protocol/oversized-body", &format!("{} list of {} bytes (limit {})", kind.key(), body.len(), insp.limits.max_list_bytes));
        return finish(insp, cx, verdict, None, None);
    }
    let Ok(text) = std::str::from_utf8(body) else {
        cx.hit_other("protocol/malformed", "not UTF-8");
        return finish(insp, cx, verdict, None, None);
    };
    let batch = text.trim_start().starts_with('[');
    let located = if batch {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(msgs) => {
                for m in msgs {
                    let _ = message(&mut cx, kind, text, m.get(), &mut verdict, &mut pins);
                }
                None
            }
            Err(e) => {
                cx.hit_other("protocol/malformed", &e.to_string());
                None
            }
        }
    } else {
        message(&mut cx, kind, text, text, &mut verdict, &mut pins)
    };
    finish(insp, cx, verdict, located, Some(text)).with_batch(batch)
}

/// Inspects one message of the answer; returns its list's items (and where they sit in `whole`).
fn message(
    cx: &mut Cx<'_>,
    kind: ListKind,
    whole: &str,
    msg: &str,
    verdict: &mut ListVerdict,
    pins: &mut Option<&mut ToolPins>,
) -> Option<Located> {
    let Ok(env) = serde_json::from_str::<WholeEnvelope>(msg) else {
        return message_in_pieces(cx, kind, whole, msg, verdict, pins);
    };
    let _ = (&env.jsonrpc, &env.error);
    if env.method.is_some() {
        return None; // a server request or notification on the stream
    }
    let r = env.result?;
    let list = match kind {
        ListKind::Tools => r.tools,
        ListKind::Prompts => r.prompts,
        ListKind::Resources => r.resources,
        ListKind::ResourceTemplates => r.resource_templates,
    }?;
    let mut items = Vec::with_capacity(list.len());
    let names: Vec<&str> = list.iter().filter_map(|v| kind.names().iter().find_map(|k| v.get(*k).and_then(Value::as_str))).collect();
    let others = super::detect::Others::new(&names);
    for value in &list {
        let mut span = Span { start: 0, end: 0, name: String::new(), max: None, held: false };
        entry(cx, kind, value, &others, &mut span, verdict, pins);
        items.push(span);
    }
    Some(Located { start: 0, end: 0, items, placed: false })
}

/// The list array's byte range, and each entry's.
type Places = (usize, usize, Vec<(usize, usize)>);

/// Where the list of `whole` (a single message) and each of its entries sit.
fn locate(whole: &str, kind: ListKind) -> Option<Places> {
    let env: Envelope<'_> = serde_json::from_str(whole).ok()?;
    let r: ListResult<'_> = serde_json::from_str(env.result?.get()).ok()?;
    let list = match kind {
        ListKind::Tools => r.tools,
        ListKind::Prompts => r.prompts,
        ListKind::Resources => r.resources,
        ListKind::ResourceTemplates => r.resource_templates,
    }?;
    let elements: Vec<&RawValue> = serde_json::from_str(list.get()).ok()?;
    let start = offset_in(whole, list.get())?;
    let spans = elements.iter().map(|raw| offset_in(whole, raw.get()).map(|at| (at, at + raw.get().len()))).collect::<Option<Vec<_>>>()?;
    Some((start, start + list.get().len(), spans))
}

/// [`message`] for what serde_json cannot read in one go: each part on its own.
fn message_in_pieces(
    cx: &mut Cx<'_>,
    kind: ListKind,
    whole: &str,
    msg: &str,
    verdict: &mut ListVerdict,
    pins: &mut Option<&mut ToolPins>,
) -> Option<Located> {
    let env: Envelope<'_> = match serde_json::from_str(msg) {
        Ok(e) => e,
        Err(e) => {
            cx.hit_other("protocol/malformed", &e.to_string());
            return None;
        }
    };
    let _ = (&env.jsonrpc, &env.error);
    if env.method.is_some() {
        return None; // a server request or notification on the stream
    }
    let result = env.result?;
    let list = match serde_json::from_str::<ListResult<'_>>(result.get()) {
        Ok(r) => match kind {
            ListKind::Tools => r.tools,
            ListKind::Prompts => r.prompts,
            ListKind::Resources => r.resources,
            ListKind::ResourceTemplates => r.resource_templates,
        },
        Err(e) => {
            cx.hit_other("protocol/malformed", &format!("result: {e}"));
            return None;
        }
    }?;
    let elements: Vec<&RawValue> = match serde_json::from_str(list.get()) {
        Ok(v) => v,
        Err(e) => {
            cx.hit_other("protocol/malformed", &format!("{}: {e}", kind.key()));
            return None;
        }
    };
    let mut start = offset_in(whole, list.get());
    let mut items = Vec::with_capacity(elements.len());
    for raw in elements {
        let Some(at) = offset_in(whole, raw.get()) else {
            start = None; // cannot happen (RawValue borrows from the body); never rewrite then
            continue;
        };
        let mut span = Span { start: at, end: at + raw.get().len(), name: String::new(), max: None, held: false };
        let value: Value = match serde_json::from_str(raw.get()) {
            Ok(v) => v,
            Err(e) => {
                // serde_json refuses what JSON.parse and Python accept (a lone surrogate escape,
                // say), and the agent may read it: check the raw text instead of waving it through.
                cx.hit_other("protocol/malformed", &e.to_string());
                let fp = Fingerprint::of(&Value::String(raw.get().to_string()));
                cx.begin_item(None, Some(fp));
                cx.scan(raw.get(), FieldClass::Annotations, &Path::root("(unparsed entry)"), false);
                verdict.items.push(ItemPrint { name: String::new(), fingerprint: fp, capability: fp, held: false });
                span.max = cx.item_max;
                items.push(span);
                continue;
            }
        };
        entry(cx, kind, &value, &super::detect::Others::default(), &mut span, verdict, pins);
        items.push(span);
    }
    start.map(|s| Located { start: s, end: s + list.get().len(), items, placed: true })
}

/// Inspects one listed entry.
fn entry(
    cx: &mut Cx<'_>,
    kind: ListKind,
    value: &Value,
    others: &super::detect::Others,
    span: &mut Span,
    verdict: &mut ListVerdict,
    pins: &mut Option<&mut ToolPins>,
) {
    let Value::Object(map) = value else {
        cx.hit_other("protocol/malformed", &format!("a {} entry is not an object", kind.key()));
        return;
    };
    let name = kind.names().iter().find_map(|k| map.get(*k).and_then(Value::as_str)).unwrap_or("");
    let fp = Fingerprint::of(value);
    cx.begin_item(Some(name), Some(fp));
    cx.defer = cx.insp.detector().is_some();
    for (k, v) in map {
        let class = match k.as_str() {
            "name" | "uri" | "uriTemplate" => FieldClass::Name,
            "title" => FieldClass::Title,
            "description" => FieldClass::Description,
            "inputSchema" | "outputSchema" | "arguments" => FieldClass::Schema,
            "icons" => continue,
            _ => FieldClass::Annotations,
        };
        cx.walk(v, class, &Path::root(k), 0);
    }
    cx.assess(value, others);
    cx.defer = false;
    // The aggregator's verdict is enforced whatever the local policy says (as its quarantine
    // is): the tool is stripped at least.
    let condemned = cx.mesh.and_then(|m| m.get(&fp)).inspect(|v| cx.hit_mesh(v)).is_some();
    let capability = super::pins::capability_print(value);
    let mut held = false;
    if kind == ListKind::Tools && !name.is_empty() {
        // Clean: nothing the policy acts on (weak evidence is only recorded, and would hold
        // many honest upgrades).
        let clean = cx.item_max.is_none_or(|s| cx.insp.action_for(s) <= Action::Record);
        let policy = cx.insp.pin_policy(cx.server);
        if let Some((change, why)) = pins.as_deref_mut().and_then(|p| p.observe_held(cx.server, name, fp, capability, clean, policy)) {
            cx.hit_pin(change);
            if let Some(why) = why {
                held = true;
                cx.hit_held(change, why);
            }
        }
    }
    verdict.items.push(ItemPrint { name: name.to_string(), fingerprint: fp, capability, held });
    span.name = name.to_string();
    span.max = cx.item_max;
    span.held = held || condemned;
    if condemned {
        cx.held += 1;
    }
}

impl ListVerdict {
    fn with_batch(mut self, batch: bool) -> Self {
        // A batch is not rewritten: what should be stripped is blocked.
        if batch && self.action == Action::Strip {
            self.action = Action::Block;
        }
        self
    }
}

fn finish(insp: &Inspector, cx: Cx<'_>, mut verdict: ListVerdict, located: Option<Located>, text: Option<&str>) -> ListVerdict {
    let mut action = cx.other_max.map_or(Action::Pass, |s| insp.action_for(s));
    // Strip has nothing to strip outside items: such findings are only recorded.
    if action == Action::Strip {
        action = Action::Record;
    }
    let item_action = |s: &Span| {
        let a = s.max.map_or(Action::Pass, |sev| insp.action_for(sev));
        if s.held && a < Action::Strip {
            Action::Strip
        } else {
            a
        }
    };
    let mut strip_any = false;
    if let Some(loc) = &located {
        for s in &loc.items {
            let a = item_action(s);
            strip_any |= a == Action::Strip;
            action = action.max(a);
        }
    }
    if let Some(sev) = cx.worst_item {
        action = action.max(insp.action_for(sev));
    }
    if cx.held > 0 {
        action = action.max(Action::Strip);
    }
    if !cx.findings.is_empty() {
        action = action.max(Action::Record);
    }
    verdict.findings = cx.findings;
    verdict.action = action;
    if action == Action::Strip && strip_any {
        let located = match (located, text) {
            (Some(mut loc), Some(text)) if !loc.placed => locate(text, verdict.kind).and_then(|(start, end, spans)| {
                (spans.len() == loc.items.len()).then(|| {
                    for (item, (a, b)) in loc.items.iter_mut().zip(spans) {
                        (item.start, item.end) = (a, b);
                    }
                    (loc.start, loc.end, loc.placed) = (start, end, true);
                    loc
                })
            }),
            (located, _) => located,
        };
        match (located, text) {
            (Some(loc), Some(text)) => {
                let mut out = String::with_capacity(text.len());
                out.push_str(text.get(..loc.start).unwrap_or(""));
                out.push('[');
                let mut first = true;
                for s in &loc.items {
                    if item_action(s) == Action::Strip {
                        verdict.stripped.push(s.name.clone());
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push_str(text.get(s.start..s.end).unwrap_or("null"));
                }
                out.push(']');
                out.push_str(text.get(loc.end..).unwrap_or(""));
                verdict.rewritten = Some(out.into_bytes());
            }
            // Nothing to rewrite safely: block instead.
            _ => verdict.action = Action::Block,
        }
    }
    verdict
}

/// The verdict on one tool definition read on its own (offline scans, the corpus evaluation).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolVerdict {
    pub name: String,
    pub action: Action,
    pub findings: Vec<Finding>,
    pub fingerprint: Fingerprint,
    /// The detector's assessment (`None` when the detector is off).
    pub assessment: Option<super::detect::Assessment>,
}

/// Inspects one tool definition as if listed with tools named `others`: the same rules, detector
/// and policy as a `tools/list` answer.
pub fn inspect_tool(insp: &Inspector, server: &str, tool: &Value, others: &[&str]) -> ToolVerdict {
    let mut cx = Cx::new(insp, server, false);
    let mut verdict = ListVerdict::pass(ListKind::Tools);
    let mut span = Span { start: 0, end: 0, name: String::new(), max: None, held: false };
    let mut pins: Option<&mut ToolPins> = None;
    let others = super::detect::Others::new(others);
    entry(&mut cx, ListKind::Tools, tool, &others, &mut span, &mut verdict, &mut pins);
    let assessment = insp.detector().map(|d| d.assess_with(tool, &others, cx.legacy));
    let mut action = span.max.map_or(Action::Pass, |s| insp.action_for(s));
    action = action.max(cx.other_max.map_or(Action::Pass, |s| insp.action_for(s)));
    if !cx.findings.is_empty() {
        action = action.max(Action::Record);
    }
    let fingerprint = verdict.items.first().map_or_else(|| Fingerprint::of(tool), |i| i.fingerprint);
    ToolVerdict { name: span.name, action, findings: cx.findings, fingerprint, assessment }
}
