//! The default inspector against a labelled corpus: tool definitions of public MCP servers
//! (`tests/data/tool_corpus/benign.json`) and poisoned ones (`poisoned.json`). Prints the
//! confusion table and per-rule hits, and fails when the false-positive rate passes 2% or the
//! detection rate falls under 95% (the figures are in docs/SECURITY.md).
//!
//! A tool counts as flagged when it draws any finding, whatever its severity.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use mcp_warden_core::inspect::{inspect_tools_list, Action, Inspector};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use wasm_bindgen_test::wasm_bindgen_test;

const BENIGN: &str = include_str!("data/tool_corpus/benign.json");
const POISONED: &str = include_str!("data/tool_corpus/poisoned.json");

struct Outcome {
    label: String,
    attack: String,
    source: String,
    name: String,
    rules: Vec<String>,
    action: Action,
}

fn run(corpus: &str, insp: &Inspector) -> Vec<Outcome> {
    let doc: Value = serde_json::from_str(corpus).unwrap();
    let entries = doc["tools"].as_array().unwrap();
    entries
        .iter()
        .map(|e| {
            let body = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [e["tool"]]}})).unwrap();
            let v = inspect_tools_list(insp, "eval", &body);
            let mut rules: Vec<String> = v.findings.iter().map(|f| f.rule.clone()).collect();
            rules.sort();
            rules.dedup();
            Outcome {
                label: e["label"].as_str().unwrap().to_string(),
                attack: e["attack"].as_str().unwrap_or("").to_string(),
                source: e["source"].as_str().unwrap_or("").to_string(),
                name: e["tool"]["name"].as_str().unwrap_or("").to_string(),
                rules,
                action: v.action,
            }
        })
        .collect()
}

#[wasm_bindgen_test(unsupported = test)]
fn default_rules_on_the_labelled_corpus() {
    let insp = Inspector::builtin();
    let benign = run(BENIGN, &insp);
    let poisoned = run(POISONED, &insp);
    assert!(benign.len() >= 80 && poisoned.len() >= 100, "corpus too small");
    assert!(benign.iter().all(|o| o.label == "benign") && poisoned.iter().all(|o| o.label == "poisoned"));

    let fp: Vec<&Outcome> = benign.iter().filter(|o| !o.rules.is_empty()).collect();
    let fn_: Vec<&Outcome> = poisoned.iter().filter(|o| o.rules.is_empty()).collect();
    let (tp, tn) = (poisoned.len() - fn_.len(), benign.len() - fp.len());
    let tp_rate = tp as f64 / poisoned.len() as f64;
    let fp_rate = fp.len() as f64 / benign.len() as f64;

    println!("rule set {}", insp.version());
    println!("               flagged   not flagged");
    println!("poisoned {:>5}   TP {:>4}    FN {:>4}", poisoned.len(), tp, fn_.len());
    println!("benign   {:>5}   FP {:>4}    TN {:>4}", benign.len(), fp.len(), tn);
    println!("detection rate {:.1}%, false-positive rate {:.1}%", 100.0 * tp_rate, 100.0 * fp_rate);

    let mut per_rule: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in &poisoned {
        for r in &o.rules {
            per_rule.entry(r).or_default().0 += 1;
        }
    }
    for o in &benign {
        for r in &o.rules {
            per_rule.entry(r).or_default().1 += 1;
        }
    }
    println!("{:<32} {:>9} {:>7}", "rule", "poisoned", "benign");
    for (r, (p, b)) in &per_rule {
        println!("{r:<32} {p:>9} {b:>7}");
    }
    let mut actions: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for o in poisoned.iter().chain(&benign) {
        *actions.entry((o.label.as_str(), o.action.as_str())).or_default() += 1;
    }
    println!("actions: {actions:?}");
    let mut per_attack: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in &poisoned {
        let e = per_attack.entry(o.attack.as_str()).or_default();
        e.0 += usize::from(!o.rules.is_empty());
        e.1 += 1;
    }
    println!("detected per attack: {per_attack:?}");
    for o in &fp {
        println!("FP {} ({}): {:?}", o.name, o.source, o.rules);
    }
    for o in &fn_ {
        println!("FN {} [{}] ({})", o.name, o.attack, o.source);
    }

    assert!(fp_rate <= 0.02, "false-positive rate {:.1}% > 2%", 100.0 * fp_rate);
    assert!(tp_rate >= 0.95, "detection rate {:.1}% < 95%", 100.0 * tp_rate);
}
