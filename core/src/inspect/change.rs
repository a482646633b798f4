//! What a changed tool definition gains: new required parameters, new parameters, wider
//! annotations (`readOnlyHint` true → false, `destructiveHint` false → true, `openWorldHint`
//! false → true), a new or widened output. A change that gains nothing and scans clean can be
//! cleared without an operator; anything else is held until approved.

use serde_json::Value;
use std::collections::BTreeSet;

fn props(tool: &Value) -> BTreeSet<String> {
    tool.pointer("/inputSchema/properties").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn required(tool: &Value) -> BTreeSet<String> {
    tool.pointer("/inputSchema/required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn hint(tool: &Value, name: &str) -> Option<bool> {
    tool.get("annotations").and_then(|a| a.get(name)).and_then(Value::as_bool)
}

/// The capabilities `new` has that `old` did not, in words (empty: none).
pub fn capability_gains(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (po, pn) = (props(old), props(new));
    for p in pn.difference(&po).take(8) {
        out.push(format!("new parameter `{p}`"));
    }
    for r in required(new).difference(&required(old)).take(8) {
        out.push(format!("`{r}` is now required"));
    }
    // MCP defaults: readOnlyHint false, destructiveHint true, openWorldHint true.
    if hint(old, "readOnlyHint") == Some(true) && hint(new, "readOnlyHint") != Some(true) {
        out.push("no longer read-only".into());
    }
    if hint(old, "destructiveHint") == Some(false) && hint(new, "destructiveHint") != Some(false) {
        out.push("now destructive".into());
    }
    if hint(old, "openWorldHint") == Some(false) && hint(new, "openWorldHint") != Some(false) {
        out.push("now reaches the open world".into());
    }
    if old.get("name") != new.get("name") {
        out.push("renamed".into());
    }
    for (k, _) in new.as_object().into_iter().flatten() {
        if !matches!(k.as_str(), "name" | "title" | "description" | "inputSchema" | "outputSchema" | "annotations" | "icons" | "_meta" | "execution")
            && old.get(k).is_none()
        {
            out.push(format!("new member `{k}`"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn gains_are_named_and_rewording_gains_nothing() {
        let old = json!({"name": "t", "description": "a", "inputSchema": {"type": "object", "properties": {"p": {}}, "required": []},
                         "annotations": {"readOnlyHint": true}});
        let reworded = json!({"name": "t", "description": "b", "inputSchema": {"type": "object", "properties": {"p": {"description": "x"}}},
                              "annotations": {"readOnlyHint": true}});
        assert!(capability_gains(&old, &reworded).is_empty());
        let wider = json!({"name": "t", "description": "a", "inputSchema": {"type": "object", "properties": {"p": {}, "notes": {}}, "required": ["notes"]}});
        let g = capability_gains(&old, &wider);
        assert_eq!(g, ["new parameter `notes`", "`notes` is now required", "no longer read-only"]);
    }
}
