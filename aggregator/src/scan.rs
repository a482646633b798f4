//! `mcp-warden-ctl scan`: vets a server offline, before onboarding it, with the same inspector
//! the filter runs (`mcp_warden_core::inspect`). Input: a `tools/list` answer, its `result`, or a
//! JSON array of tools; or `--before OLD --after NEW` to judge a changed list as the rug-pull
//! hold would (changed tools: their capability gains and whether the change clears).

use clap::Args;
use mcp_warden_core::inspect::change::capability_gains;
use mcp_warden_core::inspect::{inspect_tool, Action, Fingerprint, Inspector};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// A `tools/list` answer, its `result`, or a JSON array of tools (`-` for stdin).
    pub file: Option<PathBuf>,
    /// The list as first seen (with --after): report what changed and whether it would be held.
    #[arg(long, requires = "after", conflicts_with = "file")]
    pub before: Option<PathBuf>,
    /// The changed list (with --before).
    #[arg(long, requires = "before")]
    pub after: Option<PathBuf>,
    /// An `inspection` configuration document (as in the plugin config) instead of the defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The server name findings are reported under.
    #[arg(long, default_value = "scanned")]
    pub server: String,
}

/// One tool's verdict.
#[derive(Serialize, Debug)]
pub struct ToolReport {
    pub name: String,
    pub action: &'static str,
    pub score: Option<f32>,
    pub fingerprint: String,
    pub findings: Vec<FindingReport>,
    /// For a changed tool (`--before/--after`): what it gained, and whether the change clears.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeReport>,
}

#[derive(Serialize, Debug)]
pub struct FindingReport {
    pub rule: String,
    pub severity: String,
    pub field: String,
    pub evidence: String,
}

#[derive(Serialize, Debug)]
pub struct ChangeReport {
    pub old_fingerprint: String,
    pub gains: Vec<String>,
    /// `cleared` (scans clean, gains nothing) or `held` (until an operator approves it).
    pub verdict: &'static str,
}

#[derive(Serialize, Debug)]
pub struct ScanReport {
    pub detector: String,
    pub tools: Vec<ToolReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Tools acted on (strip or above) or held.
    pub flagged: usize,
}

fn read(path: &Path) -> Result<Value, String> {
    let raw = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s).map_err(|e| format!("cannot read stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    serde_json::from_str(&raw).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// The tools of a `tools/list` answer, its `result`, or an array of tools.
pub fn tools_of(v: &Value) -> Result<Vec<Value>, String> {
    let list = match v {
        Value::Array(a) => a,
        Value::Object(_) => v
            .pointer("/result/tools")
            .or_else(|| v.get("tools"))
            .and_then(Value::as_array)
            .ok_or("expected a tools/list answer, its result, or an array of tools")?,
        _ => return Err("expected a tools/list answer, its result, or an array of tools".into()),
    };
    if let Some(i) = list.iter().position(|t| t.get("name").and_then(Value::as_str).is_none()) {
        return Err(format!("tool [{i}] has no name"));
    }
    Ok(list.clone())
}

fn name(t: &Value) -> &str {
    t.get("name").and_then(Value::as_str).unwrap_or("")
}

fn report(insp: &Inspector, server: &str, tool: &Value, others: &[&str]) -> ToolReport {
    let v = inspect_tool(insp, server, tool, others);
    ToolReport {
        name: v.name.clone(),
        action: v.action.as_str(),
        score: v.assessment.as_ref().map(|a| (a.score * 100.0).round() / 100.0),
        fingerprint: v.fingerprint.to_string(),
        findings: v
            .findings
            .iter()
            .map(|f| FindingReport { rule: f.rule.clone(), severity: f.severity.as_str().to_string(), field: f.field.clone(), evidence: f.evidence.clone() })
            .collect(),
        change: None,
    }
}

/// Scans as the arguments say.
pub fn scan(args: &ScanArgs) -> Result<ScanReport, String> {
    let insp = match &args.config {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Inspector::from_json(&bytes).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Inspector::builtin(),
    };
    let detector = insp.detector().map_or_else(|| "off".to_string(), |d| d.version.clone());
    let (tools, before) = match (&args.file, &args.before, &args.after) {
        (Some(f), None, None) => (tools_of(&read(f)?)?, None),
        (None, Some(b), Some(a)) => (tools_of(&read(a)?)?, Some(tools_of(&read(b)?)?)),
        _ => return Err("give a FILE, or --before OLD --after NEW".into()),
    };
    let names: Vec<&str> = tools.iter().map(name).collect();
    let mut out = ScanReport { detector, tools: Vec::new(), added: Vec::new(), removed: Vec::new(), flagged: 0 };
    let old: Option<BTreeMap<&str, &Value>> = before.as_ref().map(|b| b.iter().map(|t| (name(t), t)).collect());
    for t in &tools {
        let mut r = report(&insp, &args.server, t, &names);
        let acted = Action::Strip <= match r.action {
            "strip" => Action::Strip,
            "block" => Action::Block,
            "quarantine" => Action::Quarantine,
            _ => Action::Pass,
        };
        let mut held = false;
        if let Some(old) = &old {
            match old.get(name(t)) {
                None => out.added.push(name(t).to_string()),
                Some(o) if Fingerprint::of(o) != Fingerprint::of(t) => {
                    let gains = capability_gains(o, t);
                    let clean = !acted;
                    held = !gains.is_empty() || !clean;
                    r.change = Some(ChangeReport {
                        old_fingerprint: Fingerprint::of(o).to_string(),
                        gains,
                        verdict: if held { "held" } else { "cleared" },
                    });
                }
                Some(_) => {}
            }
        }
        if acted || held {
            out.flagged += 1;
        }
        out.tools.push(r);
    }
    if let Some(old) = &old {
        out.removed = old.keys().filter(|n| !names.contains(n)).map(|n| n.to_string()).collect();
    }
    Ok(out)
}

/// Prints the report (JSON or text); returns how many tools were flagged.
pub fn run(args: &ScanArgs, json: bool, out: &mut dyn Write) -> Result<usize, String> {
    let r = scan(args)?;
    let mut s = String::new();
    if json {
        s = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())? + "\n";
    } else {
        let _ = writeln!(s, "detector {}; {} tools, {} flagged", r.detector, r.tools.len(), r.flagged);
        for t in &r.tools {
            let score = t.score.map_or(String::new(), |x| format!(" score {x:.2}"));
            let _ = writeln!(s, "{:<10} {}{score}", t.action, t.name);
            if let Some(c) = &t.change {
                let gains = if c.gains.is_empty() { "no new capability".to_string() } else { c.gains.join(", ") };
                let _ = writeln!(s, "           changed ({} -> {}): {}; {}", c.old_fingerprint, t.fingerprint, gains, c.verdict);
            }
            for f in t.findings.iter().filter(|f| f.severity != "low" || t.action != "pass") .take(10) {
                let field = if f.field.is_empty() { String::new() } else { format!(" at {}", f.field) };
                let _ = writeln!(s, "           {} [{}]{field}: {}", f.rule, f.severity, f.evidence);
            }
        }
        for a in &r.added {
            let _ = writeln!(s, "added      {a}");
        }
        for a in &r.removed {
            let _ = writeln!(s, "removed    {a}");
        }
    }
    out.write_all(s.as_bytes()).map_err(|e| e.to_string())?;
    Ok(r.flagged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_input_form_and_refuses_others() {
        let t = json!({"name": "a", "description": "Adds."});
        for v in [json!([t]), json!({"tools": [t]}), json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [t]}})] {
            assert_eq!(tools_of(&v).unwrap().len(), 1);
        }
        assert!(tools_of(&json!({"x": 1})).is_err());
        assert!(tools_of(&json!([{"description": "no name"}])).unwrap_err().contains("[0]"));
    }
}
