//! The protections of the real binaries on loopback: a damaged database stops the start, slow
//! and idle clients are disconnected, requests without a known token are limited per address,
//! connections are capped; `mcp-warden-ctl audit verify`, `backup` and `restore`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn addr(p: &Process) -> String {
    p.base.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes the connection (or `limit` passes); what was read and when.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("still open after {:?}: {e}; read {:?}", t0.elapsed(), String::from_utf8_lossy(&got)),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), t0.elapsed())
}

#[test]
fn a_damaged_database_stops_the_start_with_a_message_naming_it() {
    let dir = TempDir::new("bin-corrupt");
    let db = dir.path().join("trust.db");
    let junk = b"SQLite format 2? no: garbage where the trust database should be".repeat(64);
    std::fs::write(&db, &junk).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-warden-aggregator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .arg("--tokens")
        .arg(write_tokens(dir.path()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("database {} is damaged or not an mcp-warden database", db.display())), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    assert_eq!(std::fs::read(&db).unwrap(), junk, "the file was changed");
}

#[test]
fn slow_or_idle_clients_are_disconnected() {
    let dir = TempDir::new("bin-slow");
    let config = json!({"limits": {"header_read_timeout_ms": 400, "request_timeout_ms": 600}});
    let agg = Process::start_with(dir.path(), Some(&config));

    // Headers trickled and never finished.
    let mut s = TcpStream::connect(addr(&agg)).unwrap();
    s.write_all(b"GET /v1/scores HTTP/1.1\r\nHost: agg\r\nX-Slow: ").unwrap();
    let (_, took) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(took < Duration::from_secs(3), "{took:?}");

    // An idle connection (nothing sent) is closed too.
    let mut s = TcpStream::connect(addr(&agg)).unwrap();
    let (_, took) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(took < Duration::from_secs(3), "{took:?}");

    // A body that stops half-way: 408, then the connection closes.
    let mut s = TcpStream::connect(addr(&agg)).unwrap();
    s.write_all(
        format!(
            "POST /v1/signals HTTP/1.1\r\nHost: agg\r\nAuthorization: Bearer {SIDECAR}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"sidecar\":"
        )
        .as_bytes(),
    )
    .unwrap();
    let (answer, took) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the request body was not received within 600 ms"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Well-behaved clients are served meanwhile.
    let (status, _) = get(&agent(), &format!("{}/v1/scores", agg.base), READER);
    assert_eq!(status, 200);
}

#[test]
fn bad_tokens_are_limited_per_address_and_connections_are_capped() {
    let dir = TempDir::new("bin-limits");
    let config = json!({"limits": {"rates": {"unauthenticated": {"per_second": 0.01, "burst": 3}}, "max_connections": 2}});
    let agg = Process::start_with(dir.path(), Some(&config));
    let a = agent();
    for _ in 0..3 {
        assert_eq!(get(&a, &format!("{}/v1/scores", agg.base), "guess-0000000000000000").0, 401);
    }
    let mut res = a.get(&format!("{}/v1/scores", agg.base)).header("Authorization", "Bearer guess-1111111111111111").call().unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let body: Value = serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("without a known token from 127.0.0.1"), "{body}");
    assert_eq!(get(&a, &format!("{}/v1/scores", agg.base), READER).0, 200);
    // Its pooled keep-alive connection would hold a slot.
    drop(a);

    // Two idle connections take both slots: a third waits until one closes.
    let idle1 = TcpStream::connect(addr(&agg)).unwrap();
    let _idle2 = TcpStream::connect(addr(&agg)).unwrap();
    let third = std::thread::spawn({
        let base = agg.base.clone();
        move || {
            let status = get(&agent(), &format!("{base}/v1/scores"), READER).0;
            (status, Instant::now())
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(!third.is_finished(), "a third connection was served while two were open");
    let released = Instant::now();
    drop(idle1);
    let (status, served) = third.join().unwrap();
    assert_eq!(status, 200);
    // Served only once a slot was free (whenever its thread got to run).
    assert!(served >= released, "served before a slot was released");
}

fn ctl(base: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-warden-ctl"));
    cmd.args(args).env("MCP_WARDEN_URL", base).env_remove("MCP_WARDEN_TOKEN");
    if let Some(t) = token {
        cmd.env("MCP_WARDEN_TOKEN", t);
    }
    let o = cmd.output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn ctl_verifies_the_audit_log_and_backs_up_and_restores() {
    let dir = TempDir::new("bin-ctl");
    let mut agg = Process::start(dir.path());
    let b = agg.base.clone();
    for (action, reason) in [("quarantine", "one"), ("release", "two"), ("quarantine", "three")] {
        let (ok, _, err) = ctl(&b, Some(OPERATOR), &[action, "w", "--reason", reason]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = ctl(&b, Some(READER), &["audit", "verify"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("audit log intact: 3 entries, head #3 "), "{out}");
    let (ok, out, _) = ctl(&b, Some(READER), &["--json", "audit", "verify"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["ok"], true);
    let (ok, out, _) = ctl(&b, Some(OPERATOR), &["audit", "--limit", "2"]);
    assert!(ok && out.lines().count() == 3, "{out}");

    let backup = dir.path().join("backup.db");
    let bs = backup.to_str().unwrap();
    let (ok, _, err) = ctl(&b, Some(READER), &["backup", "--out", bs]);
    assert!(!ok && err.contains("HTTP 403"), "{err}");
    let (ok, out, err) = ctl(&b, Some(OPERATOR), &["backup", "--out", bs]);
    assert!(ok, "{err}");
    assert!(out.contains("schema 2, 1 servers, 0 ratings, 3 audit entries, chain verified, head #3"), "{out}");
    let (ok, _, err) = ctl(&b, Some(OPERATOR), &["backup", "--out", bs]);
    assert!(!ok && err.contains("exists (pass --force"), "{err}");

    // Restoring over the running aggregator's database is refused.
    let db = dir.path().join("trust.db");
    let ds = db.to_str().unwrap();
    let (ok, _, err) = ctl(&b, None, &["restore", "--from", bs, "--db", ds, "--force"]);
    assert!(!ok && err.contains("is in use"), "{err}");

    // Something changes after the backup; restoring brings the backed-up state back.
    let (ok, _, err) = ctl(&b, Some(OPERATOR), &["release", "w", "--reason", "four"]);
    assert!(ok, "{err}");
    agg.kill();
    let (ok, out, err) = ctl(&b, None, &["restore", "--from", bs, "--db", ds, "--force"]);
    assert!(ok, "{err}");
    assert!(out.contains("3 audit entries, chain verified") && out.contains("kept the previous file as"), "{out}");
    let agg = Process::start(dir.path());
    let (_, d) = get(&agent(), &format!("{}/v1/servers/w", agg.base), READER);
    assert_eq!(d["state"], "quarantined");
    let (ok, out, err) = ctl(&agg.base, Some(READER), &["audit", "verify"]);
    assert!(ok && out.contains("3 entries"), "{out}{err}");

    // A tampered log: verify fails and names the entry.
    drop(agg);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'someone-else' WHERE id = 2").unwrap();
    drop(conn);
    let agg = Process::start(dir.path());
    let (ok, _, err) = ctl(&agg.base, Some(OPERATOR), &["audit", "verify"]);
    assert!(!ok, "verify passed a tampered log");
    assert!(err.contains("audit log broken at entry #2: entry #2 does not match its hash"), "{err}");
}
