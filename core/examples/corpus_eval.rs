//! Evaluates the inspector on a labelled corpus split (`corpus/data/{dev,test}.jsonl`, built by
//! `corpus/generate.py`): recall (poisoned tools acted on, strip or above) and false-positive
//! rate, overall and per family, for the phrase rules alone and for the full detector, and the
//! confusion of the default policy's actions. `--dump FILE` writes each row's detector features
//! (the trainer's input). `--thresholds R,S,Q` evaluates other thresholds.
//!
//! cargo run --release -p mcp-warden-core --example corpus_eval -- corpus/data/dev.jsonl [--dump f]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::print_stdout)]

use mcp_warden_core::inspect::detect::FEATURES;
use mcp_warden_core::inspect::{inspect_tool, Action, DetectorConfig, InspectionConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Default)]
struct Tally {
    n: usize,
    acted: usize,
    any: usize,
}

fn pct(a: usize, n: usize) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / n as f64)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut files = Vec::new();
    let mut dump: Option<String> = None;
    let mut thresholds: Option<(f32, f32, f32)> = None;
    let mut show_misses = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--dump" => {
                dump = args.get(i + 1).cloned();
                i += 1;
            }
            "--thresholds" => {
                let v: Vec<f32> = args[i + 1].split(',').map(|x| x.parse().unwrap()).collect();
                thresholds = Some((v[0], v[1], v[2]));
                i += 1;
            }
            "--misses" => show_misses = true,
            "--bench" => i += 1,
            "--names" => {
                std::fs::write(&args[i + 1], FEATURES.join("\n") + "\n").unwrap();
                i += 1;
            }
            f => files.push(f.to_string()),
        }
        i += 1;
    }
    let rules_only = InspectionConfig { detector: DetectorConfig { enabled: Some(false), ..Default::default() }, ..Default::default() }
        .compile("")
        .unwrap();
    let mut cfg = InspectionConfig::default();
    if let Some((r, s, q)) = thresholds {
        cfg.detector = DetectorConfig { enabled: Some(true), record: Some(r), strip: Some(s), quarantine: Some(q) };
    }
    let full = cfg.compile("").unwrap();
    let mut out = dump.map(|p| std::io::BufWriter::new(std::fs::File::create(p).unwrap()));
    if let Some(pos) = args.iter().position(|a| a == "--bench") {
        // Native cost of one 100-tool tools/list answer (the first 100 rows of the file).
        let text = std::fs::read_to_string(&args[pos + 1]).unwrap();
        let tools: Vec<Value> = text.lines().take(100).map(|l| serde_json::from_str::<Value>(l).unwrap()["tool"].clone()).collect();
        let body = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})).unwrap();
        for (label, insp) in [("rules alone", &rules_only), ("full detector", &full)] {
            let n = 200;
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(mcp_warden_core::inspect::inspect_tools_list(insp, "bench", &body));
            }
            let per = t0.elapsed() / n;
            println!("{label}: {per:?} per 100-tool tools/list ({} bytes), native release build", body.len());
        }
        return;
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rows: Vec<Value> = text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        println!("== {file}: {} rows", rows.len());
        for (label, insp) in [("rules alone", &rules_only), ("full detector", &full)] {
            let mut fam: BTreeMap<String, Tally> = BTreeMap::new();
            let mut confusion: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
            let mut misses = Vec::new();
            for r in &rows {
                let others: Vec<&str> = r["others"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                let v = inspect_tool(insp, "eval", &r["tool"], &others);
                let lab = r["label"].as_str().unwrap().to_string();
                let key = if lab == "benign" { format!("benign/{}", r["family"].as_str().unwrap()) } else { format!("poisoned/{}", r["family"].as_str().unwrap()) };
                let t = fam.entry(key.clone()).or_default();
                t.n += 1;
                t.acted += usize::from(v.action >= Action::Strip);
                t.any += usize::from(v.action >= Action::Record);
                *confusion.entry((lab.clone(), v.action.as_str())).or_default() += 1;
                let wrong = (lab == "benign") == (v.action >= Action::Strip) || (lab == "benign" && v.assessment.as_ref().is_some_and(|a| a.score > -1.0));
                if show_misses && wrong && std::ptr::eq(insp, &full) {
                    let score = v.assessment.as_ref().map_or(0.0, |a| a.score);
                    let feats: Vec<String> = v.assessment.as_ref().map(|a| a.evidence.iter().map(|e| format!("{}@{}: {}", e.feature, e.field, e.excerpt)).collect()).unwrap_or_default();
                    misses.push(format!("{key} {} score {score:.2} {:?} {}", r["server"], feats, serde_json::to_string(&r["tool"]).unwrap().chars().take(300).collect::<String>()));
                }
                if std::ptr::eq(insp, &full) {
                    if let (Some(o), Some(a)) = (out.as_mut(), v.assessment.as_ref()) {
                        let line = json!({"id": r["id"], "label": lab, "family": r["family"], "server": r["server"], "score": a.score, "x": a.features});
                        writeln!(o, "{line}").unwrap();
                    }
                }
            }
            let (mut pn, mut pa, mut pany, mut bn, mut ba, mut rn, mut ra) = (0, 0, 0, 0, 0, 0, 0);
            for (k, t) in &fam {
                if k.starts_with("poisoned/") {
                    pn += t.n;
                    pa += t.acted;
                    pany += t.any;
                } else {
                    bn += t.n;
                    ba += t.acted;
                    if k == "benign/real" {
                        rn += t.n;
                        ra += t.acted;
                    }
                }
            }
            println!("-- {label}: recall (acted on) {pa}/{pn} = {}, any finding {}; false positives {ba}/{bn} = {} (real tools {ra}/{rn} = {})",
                pct(pa, pn), pct(pany, pn), pct(ba, bn), pct(ra, rn));
            for (k, t) in &fam {
                println!("   {k:32} acted {:>4}/{:<4} {:>7}   any {:>7}", t.acted, t.n, pct(t.acted, t.n), pct(t.any, t.n));
            }
            let actions = ["pass", "record", "strip", "block", "quarantine"];
            println!("   confusion (label x action): {}", actions.join(" / "));
            for lab in ["benign", "poisoned"] {
                let row: Vec<String> = actions.iter().map(|a| confusion.get(&(lab.to_string(), *a)).copied().unwrap_or(0).to_string()).collect();
                println!("   {lab:10} {}", row.join(" / "));
            }
            for m in misses.iter().take(200) {
                println!("   MISS {m}");
            }
        }
    }
}
