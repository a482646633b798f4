//! `mcp-warden-ctl` against the real aggregator binary on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use std::process::Command;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn ctl(base: &str, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-warden-ctl"));
    cmd.args(args).env("MCP_WARDEN_URL", base).env_remove("MCP_WARDEN_TOKEN");
    if let Some(t) = token {
        cmd.env("MCP_WARDEN_TOKEN", t);
    }
    let o = cmd.output().unwrap();
    Out { ok: o.status.success(), stdout: String::from_utf8_lossy(&o.stdout).into(), stderr: String::from_utf8_lossy(&o.stderr).into() }
}

#[track_caller]
fn ok(o: Out, want: &str) -> String {
    assert!(o.ok, "failed: {}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains(want), "{:?} lacks {want:?}", o.stdout);
    o.stdout
}

#[track_caller]
fn fails(o: Out, want: &str) {
    assert!(!o.ok, "should fail: {}", o.stdout);
    assert!(o.stderr.contains(want), "{:?} lacks {want:?}", o.stderr);
}

#[test]
fn operator_cli_drives_the_api() {
    let dir = TempDir::new("cli");
    let agg = Process::start(dir.path());
    let b = agg.base.as_str();
    let srv = "outbound|8080||files";

    ok(
        ctl(b, Some(SCANNER), &["flag", srv, "--severity", "critical", "--rule", "exfil", "--tool", "read_file", "--description", "sends ~/.ssh away"]),
        "flag #1 on `outbound|8080||files`: counted; state quarantined",
    );
    ok(ctl(b, Some(READER), &["scores"]), "quarantined");
    let s = ok(ctl(b, Some(READER), &["server", srv]), "quarantined automatically (`aggregator`)");
    assert!(s.contains("critical exfil tool read_file by scanner-1"), "{s}");
    fails(ctl(b, Some(READER), &["release", srv, "--reason", "x"]), "HTTP 403");
    ok(ctl(b, Some(OPERATOR), &["release", srv, "--reason", "reviewed"]), "released `outbound|8080||files`");
    fails(ctl(b, Some(OPERATOR), &["release", srv, "--reason", "again"]), "HTTP 409: server `outbound|8080||files` is not quarantined");
    ok(ctl(b, Some(RATER), &["rate", srv, "0.9", "--comment", "works for us"]), "`alice` rated server `outbound|8080||files` 0.9");
    ok(ctl(b, Some(OPERATOR), &["rate", "--rater", "alice", "1"]), "`ops` rated rater `alice` (vouch) 1 (your standing 1.00)");
    ok(ctl(b, Some(OPERATOR), &["quarantine", srv, "--reason", "manual hold"]), "quarantined `outbound|8080||files` (audit #3)");
    let audit = ok(ctl(b, Some(OPERATOR), &["audit"]), "manual hold");
    let actions: Vec<&str> = audit.lines().skip(1).filter_map(|l| l.split_whitespace().nth(4)).collect();
    assert_eq!(actions, ["quarantine", "release", "auto_quarantine"], "{audit}");
    let json: serde_json::Value = serde_json::from_str(&ok(ctl(b, Some(READER), &["--json", "scores"]), "version")).unwrap();
    assert_eq!(json["servers"][0]["state"], "quarantined");

    // Held tool changes: listed, approved by an operator (audited), then in force.
    let fp = "00112233445566778899aabbccddeeff";
    let held = serde_json::json!({"sidecar": "pod-1", "batch_id": "held-1", "servers": [{"server": srv, "security": [{
        "rule": "pin/tool-held", "severity": "medium", "tool": "read_file", "new_fingerprint": fp,
        "evidence": format!("held until {fp} is cleared (scanned clean with no new capability, or approved): the new definition gains a capability (parameters or annotations)")}]}]});
    let (status, _) = post(&agent(), &format!("{b}/v1/signals"), SIDECAR, &held).unwrap();
    assert_eq!(status, 200);
    let listed = ok(ctl(b, Some(READER), &["held"]), "1 held change(s) waiting for an operator");
    assert!(listed.contains(fp) && listed.contains("read_file") && listed.contains("gains a capability"), "{listed}");
    fails(ctl(b, Some(READER), &["approve", srv, fp, "--reason", "x"]), "HTTP 403");
    fails(ctl(b, Some(OPERATOR), &["approve", srv, "xyz", "--reason", "x"]), "field `fingerprint`");
    ok(ctl(b, Some(OPERATOR), &["approve", srv, fp, "--reason", "new path parameter reviewed"]), &format!("approved {fp} of tool `read_file`"));
    let listed = ok(ctl(b, Some(READER), &["held", "--server", srv]), "0 held change(s)");
    assert!(listed.contains("1 approval(s) in force") && listed.contains("new path parameter reviewed"), "{listed}");
    ok(ctl(b, Some(OPERATOR), &["audit", "--limit", "1"]), "approve_tool");
    // ... and revoked: the approval withdrawn, the definition stripped on every sidecar.
    fails(ctl(b, Some(READER), &["revoke", srv, fp, "--reason", "x"]), "HTTP 403");
    ok(ctl(b, Some(OPERATOR), &["revoke", srv, fp, "--reason", "it reads ~/.ssh after all"]), &format!("revoked {fp} on `{srv}` (approval withdrawn"));
    ok(ctl(b, Some(READER), &["held", "--server", srv]), "0 approval(s) in force");
    ok(ctl(b, Some(OPERATOR), &["audit", "--limit", "1"]), "revoke_tool");

    fails(ctl(b, None, &["scores"]), "no token");
    fails(ctl(b, Some("wrong-token-0000000000"), &["scores"]), "HTTP 401: unknown token");
    fails(ctl(b, Some(RATER), &["rate", srv]), "give SERVER VALUE");
    fails(ctl(b, Some(RATER), &["rate", srv, "lots"]), "VALUE must be a number");
    fails(ctl(b, Some(RATER), &["rate", srv, "1.5"]), "field `value`: must be in [0, 1]");
    fails(ctl("http://127.0.0.1:1", Some(READER), &["scores"]), "cannot reach");
}

#[test]
fn control_characters_reach_no_terminal_and_no_log_line() {
    let dir = TempDir::new("cli-escape");
    let agg = Process::start(dir.path());
    let b = &agg.base;
    let hostile = "title\u{1b}]0;pwned\u{7}\u{1b}[2J cleared\nINFO released by an operator: all clear";
    let flag = serde_json::json!({"server": "w", "severity": "critical", "rule": "exfil", "tool": "t",
                                  "description": hostile});
    let (status, _) = post(&agent(), &format!("{b}/v1/flags"), SCANNER, &flag).unwrap();
    assert_eq!(status, 200);
    // The API keeps what was sent.
    let (_, detail) = get(&agent(), &format!("{b}/v1/servers/w"), READER);
    assert_eq!(detail["flags"][0]["description"], hostile);
    for (token, args) in [(READER, vec!["server", "w"]), (OPERATOR, vec!["audit"])] {
        let o = ctl(b, Some(token), &args);
        assert!(o.ok, "{}{}", o.stdout, o.stderr);
        // Only the CLI's own line breaks; no escape, bell or other control character.
        assert!(!o.stdout.chars().any(|c| c.is_control() && c != '\n'), "{:?}", o.stdout);
        assert!(!o.stdout.lines().any(|l| l.starts_with("INFO released")), "{}", o.stdout);
        assert!(o.stdout.contains("\\x1b]0;pwned\\x07\\x1b[2J cleared\\nINFO released"), "{}", o.stdout);
        println!("mcp-warden-ctl {}:\n{}", args.join(" "), o.stdout);
    }
    // The log shows the quarantine reason on one line, escaped.
    let log = std::fs::read_to_string(dir.path().join("aggregator.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("INFO released")), "{log}");
}

#[test]
fn an_operator_lists_provisional_servers_and_admits_one() {
    let dir = TempDir::new("cli-admit");
    // The default quorum with the harness's two sidecar names: 2.
    let agg = Process::start_with(dir.path(), Some(&serde_json::json!({"sidecar": {"server_admission_quorum": null}})));
    let b = agg.base.as_str();
    let batch = serde_json::json!({"sidecar": "pod-1", "batch_id": "p-1", "servers": [{"server": "new-srv", "outcomes": {"success": 3}}]});
    let (status, ack) = post(&agent(), &format!("{b}/v1/signals"), SIDECAR, &batch).unwrap();
    assert_eq!(status, 200);
    assert_eq!(ack["provisional_servers"], serde_json::json!(["new-srv"]), "{ack}");
    let listed = ok(ctl(b, Some(READER), &["provisional"]), "1 provisional servers (a server is tracked once 2 sidecar credentials name it");
    assert!(listed.lines().any(|l| l.starts_with("new-srv") && l.ends_with("sidecar-1") && l.contains(" 3 ")), "{listed}");
    fails(ctl(b, Some(READER), &["server", "new-srv"]), "provisional, named by sidecars sidecar-1 of the 2 needed");
    fails(ctl(b, Some(RATER), &["admit", "new-srv", "--reason", "x"]), "HTTP 403");
    ok(ctl(b, Some(OPERATOR), &["admit", "new-srv", "--reason", "ours"]), "admitted `new-srv` (audit #1); state trusted");
    fails(ctl(b, Some(OPERATOR), &["admit", "new-srv", "--reason", "again"]), "HTTP 409: server `new-srv` is tracked already");
    ok(ctl(b, Some(READER), &["server", "new-srv"]), "traffic   3 ok");
    ok(ctl(b, Some(READER), &["provisional"]), "0 provisional servers");
    ok(ctl(b, Some(OPERATOR), &["audit"]), "admit");
    let log = std::fs::read_to_string(dir.path().join("aggregator.log")).unwrap();
    assert!(log.contains("server_admission_quorum") && log.contains("quorum=2"), "{log}");
}
