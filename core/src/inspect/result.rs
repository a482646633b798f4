//! Tool results: the text a server returns as data (`content[].text`, embedded resources' text,
//! `structuredContent` strings) checked with the same rules at their result severities, since an
//! answer can carry a prompt injection as well as a definition can.

use super::rules::FieldClass;
use super::{Action, Cx, Finding, Inspector, Path, Seg};
use serde_json::Value;

/// The verdict on one tool result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultVerdict {
    /// `Strip` never comes out here (a result is not rewritten): it is taken as `Block`.
    pub action: Action,
    pub findings: Vec<Finding>,
}

/// Inspects a `tools/call` answer (one JSON-RPC message, or a batch).
pub fn inspect_tool_result(insp: &Inspector, server: &str, tool: Option<&str>, body: &[u8]) -> ResultVerdict {
    let pass = ResultVerdict { action: Action::Pass, findings: Vec::new() };
    if !insp.enabled || !insp.limits.inspect_results {
        return pass;
    }
    let mut cx = Cx::new(insp, server, true);
    cx.begin_item(tool, None);
    if body.len() > insp.limits.max_result_bytes {
        cx.hit_other("protocol/oversized-body", &format!("tool result of {} bytes (limit {})", body.len(), insp.limits.max_result_bytes));
    } else {
        let text = std::str::from_utf8(body).ok();
        match text.map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Array(msgs))) => msgs.iter().for_each(|m| message(&mut cx, m)),
            Some(Ok(m)) => message(&mut cx, &m),
            Some(Err(e)) => {
                // The agent's parser may accept what serde_json refuses: check the raw text.
                cx.hit_other("protocol/malformed", &format!("tool result: {e}"));
                if let Some(t) = text {
                    cx.scan(t, FieldClass::Description, &Path::root("(unparsed body)"), false);
                }
            }
            None => cx.hit_other("protocol/malformed", "tool result is not UTF-8"),
        }
    }
    let mut action = cx.other_max.map_or(Action::Pass, |s| insp.action_for(s).min(Action::Record));
    if let Some(s) = cx.item_max {
        action = action.max(insp.action_for(s));
    }
    if !cx.findings.is_empty() {
        action = action.max(Action::Record);
    }
    if action == Action::Strip {
        action = Action::Block;
    }
    ResultVerdict { action, findings: cx.findings }
}

fn message(cx: &mut Cx<'_>, m: &Value) {
    if m.get("method").is_some() {
        return;
    }
    let Some(result) = m.get("result") else { return };
    if let Some(items) = result.get("content").and_then(Value::as_array) {
        let root = Path::root("content");
        for (i, item) in items.iter().enumerate() {
            let at = root.child(Seg::Index(i));
            match item.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(t) = item.get("text").and_then(Value::as_str) {
                        cx.scan(t, FieldClass::Description, &at.child(Seg::Key("text")), false);
                    }
                }
                Some("resource") => {
                    if let Some(t) = item.get("resource").and_then(|r| r.get("text")).and_then(Value::as_str) {
                        let r = at.child(Seg::Key("resource"));
                        cx.scan(t, FieldClass::Description, &r.child(Seg::Key("text")), false);
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(sc) = result.get("structuredContent") {
        cx.walk(sc, FieldClass::Annotations, &Path::root("structuredContent"), 0);
    }
}
