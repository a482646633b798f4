//! Rug pulls on a labelled corpus split (`corpus/data/{dev,test}.jsonl`): each poisoned variant
//! of a real tool is listed after the original, as a server that changes a tool after it was
//! pinned would. Counts what the agent gets with the default policy: the change held (old
//! definition kept out), the new definition stripped or blocked by the inspection, or passed.
//!
//! cargo run --release -p mcp-warden-core --example rugpull_eval -- corpus/data/test.jsonl
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::print_stdout)]

use mcp_warden_core::inspect::{inspect_tools_list_pinned, Action, Inspector, ToolPins};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// The tool listed with the server's other tools (names only: they are shadowing's evidence).
fn list(tool: &Value, others: &Value) -> Vec<u8> {
    let mut tools = vec![tool.clone()];
    let own = tool["name"].as_str().unwrap_or("");
    for o in others.as_array().into_iter().flatten().filter_map(Value::as_str).filter(|o| *o != own) {
        tools.push(json!({"name": o, "inputSchema": {"type": "object"}}));
    }
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})).unwrap()
}

fn main() {
    let path = std::env::args().nth(1).expect("a corpus file");
    let rows: Vec<Value> =
        std::fs::read_to_string(&path).unwrap().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    let name = |r: &Value| r["tool"]["name"].as_str().unwrap_or("").to_string();
    let mut originals: HashMap<(String, String), &Value> = HashMap::new();
    for r in rows.iter().filter(|r| r["label"] == "benign" && r["family"] == "real") {
        originals.insert((r["server"].as_str().unwrap().to_string(), name(r)), r);
    }
    let insp = Inspector::builtin();
    let (mut pairs, mut held, mut acted, mut passed) = (0, 0, 0, 0);
    let mut by_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["label"] == "poisoned") {
        let Some(orig) = originals.get(&(r["server"].as_str().unwrap().to_string(), name(r))) else { continue };
        let mut pins = ToolPins::new(64, 4);
        let first = inspect_tools_list_pinned(&insp, "s", &list(&orig["tool"], &orig["others"]), &mut pins);
        if first.action >= Action::Strip {
            continue; // the original itself is acted on: not a rug pull of a clean tool
        }
        pairs += 1;
        let v = inspect_tools_list_pinned(&insp, "s", &list(&r["tool"], &orig["others"]), &mut pins);
        let stopped = if v.items.iter().any(|i| i.held) {
            held += 1;
            true
        } else if v.action >= Action::Strip {
            acted += 1;
            true
        } else {
            passed += 1;
            false
        };
        let e = by_family.entry(r["family"].as_str().unwrap_or("?").to_string()).or_default();
        e.0 += 1;
        e.1 += usize::from(stopped);
    }
    let pct = |a: usize| 100.0 * a as f64 / pairs.max(1) as f64;
    println!("{path}: {pairs} rug pulls of clean real tools");
    println!("  held {held} ({:.1}%), stripped or blocked {acted} ({:.1}%), reached the agent {passed} ({:.1}%)", pct(held), pct(acted), pct(passed));
    for (f, (n, s)) in by_family {
        println!("  {f:20} {s}/{n}");
    }
}
