//! The checks behind every fuzz target: each function runs one input through a parser of
//! `mcp-warden-core` and asserts the properties that must hold for any input, not only "no panic".
//!
//! Used by the cargo-fuzz targets in `fuzz_targets/` and, through `#[path]`, by the host test
//! `core/tests/fuzz_regressions.rs`, so plain `cargo test` replays the seeds and every saved crash
//! through exactly the same code. A failed property panics, which libFuzzer reports as a crash.

#![allow(clippy::indexing_slicing, clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use mcp_warden_core::breaker::codec;
use mcp_warden_core::breaker::window::Window;
use mcp_warden_core::breaker::{Admission, BreakerPolicy, BreakerState, CallRecord, Phase, WindowKind};
use mcp_warden_core::degrade::{ClusterStatus, Reason, Unavailable};
use mcp_warden_core::inspect::{self, Action, Inspector, ListKind, ToolPins};
use mcp_warden_core::mcp::classify::{FailurePolicy, HttpMethod, ResponseHead, ResponseObserver};
use mcp_warden_core::mcp::jsonrpc::{parse_request, parse_response, ResponseBody};
use mcp_warden_core::mcp::sse::{SseEvent, SseParser};
use mcp_warden_core::retry::{learn_tools, ToolCatalog, MAX_TOOLS};
use mcp_warden_core::trust::sidecar::TrustTable;
use mcp_warden_core::trust::wire::{FlagRequest, RatingRequest, ScoresDocument, SignalBatch};
use mcp_warden_core::{FailureKind, Outcome, PluginConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// One target's checks: panics when a property fails.
pub type Check = fn(&[u8]);

/// Every target by name (the directory names under `fuzz/seeds/` and `fuzz/regressions/`).
pub const TARGETS: [(&str, Check); 10] = [
    ("config", config),
    ("jsonrpc_request", jsonrpc_request),
    ("jsonrpc_response", jsonrpc_response),
    ("sse", sse),
    ("classify", classify),
    ("breaker_codec", breaker_codec),
    ("trust_wire", trust_wire),
    ("learn_tools", learn_tools_target),
    ("degrade", degrade),
    ("inspect_tools_list", inspect_tools_list),
];

/// Separates two parts of one input (never part of valid UTF-8, so never of valid JSON).
const SEP: u8 = 0xff;

fn split_sep(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == SEP) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Deterministic chunkings of `len` bytes: whole, byte by byte, and pseudo-random cuts seeded by
/// the input, with empty chunks among them (hosts may hand a filter an empty body chunk).
fn chunkings(data: &[u8]) -> Vec<Vec<(usize, usize)>> {
    let len = data.len();
    let bytes = if len == 0 { vec![(0, 0)] } else { (0..len).map(|i| (i, i + 1)).collect() };
    let mut all = vec![vec![(0, len)], bytes];
    let mut seed = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    for _ in 0..4 {
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let step = (seed % 9) as usize; // 0 gives an empty chunk
            let end = (at + step).min(len);
            cuts.push((at, end));
            at = end;
        }
        cuts.push((len, len));
        all.push(cuts);
    }
    // Every place where a CR ends a chunk, with an empty chunk after it.
    let crs: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut at = 0;
        for (i, &b) in data.iter().enumerate() {
            if b == b'\r' {
                v.push((at, i + 1));
                v.push((i + 1, i + 1));
                at = i + 1;
            }
        }
        v.push((at, len));
        v
    };
    all.push(crs);
    all
}

// ---------------------------------------------------------------------------------------------
// config

/// `PluginConfig::from_json`: an error names a field or is a JSON error; a config that loads
/// routes each server's own match somewhere.
pub fn config(data: &[u8]) {
    match PluginConfig::from_json(data) {
        Err(e) => {
            assert!(!e.message.is_empty(), "empty message for field `{}`", e.field);
            let names_field = !e.field.is_empty() && e.field != ".";
            let root = serde_json::from_slice::<Value>(data);
            let parse_error = match &root {
                Err(_) => true,                    // not JSON at all
                Ok(v) => !v.is_object(),           // not an object: nothing to name
            };
            // At the root, serde names the field in the message (missing / duplicate field `x`).
            let message_names_field = e.message.contains("field `");
            assert!(
                names_field || parse_error || message_names_field,
                "error names no field: {e:?} for {:?}",
                String::from_utf8_lossy(data)
            );
            if names_field {
                let shown = e.to_string();
                assert!(shown.contains(e.field.trim_start_matches('.')), "{shown} does not show {}", e.field);
            }
        }
        Ok(c) => {
            // Nothing may follow the configuration (a second object would be silently ignored).
            assert!(serde_json::from_slice::<Value>(data).is_ok(), "loaded a configuration that is not one JSON value");
            assert!(!c.servers.is_empty());
            for s in &c.servers {
                assert!(!s.clusters.is_empty());
                for &i in &s.clusters {
                    assert!(c.cluster(i).is_some(), "server {} names cluster index {i}", s.name);
                }
                let authority = match s.matcher.authority.as_deref() {
                    None => "any.example".to_string(),
                    Some(a) => match a.strip_prefix("*.") {
                        Some(domain) => format!("x.{domain}"),
                        None => a.to_string(),
                    },
                };
                let path = s.matcher.path_prefix.clone().unwrap_or_else(|| "/mcp".into());
                assert!(c.route(&authority, &path).is_some(), "server {} unreachable by {authority}{path}", s.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC

/// Asserts that `data` is JSON (UTF-8 and the JSON grammar) and returns it as a `Value`, unless
/// a `Value` cannot hold it (an escaped lone surrogate is valid JSON but no Rust `String`).
fn must_be_json(data: &[u8], what: &str) -> Option<Value> {
    assert!(std::str::from_utf8(data).is_ok(), "{what} a body that is not UTF-8");
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(data) {
        panic!("{what} a body that is not JSON: {e}");
    }
    serde_json::from_slice::<Value>(data).ok()
}

/// Whether `v` is shaped like a request message `parse_request` must read: an object whose
/// `method` is a string (or null/absent) and whose `params` is structured (or null/absent).
fn request_shaped(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    matches!(o.get("method"), None | Some(Value::Null | Value::String(_)))
        && matches!(o.get("params"), None | Some(Value::Null | Value::Object(_) | Value::Array(_)))
}

/// `parse_request`: reads every well-shaped JSON request, agrees with a plain JSON reading on
/// ids and methods, and reads the same ids whether or not names come from headers.
pub fn jsonrpc_request(data: &[u8]) {
    let full = parse_request(data, false);
    let ids_only = parse_request(data, true);
    let batch = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if let Ok(p) = &full {
        assert_eq!(p.batch, batch);
        let q = ids_only.as_ref().unwrap_or_else(|e| panic!("read with names but not ids only: {e:?}"));
        assert_eq!(p.batch, q.batch);
        assert_eq!(p.expected_ids().collect::<Vec<_>>(), q.expected_ids().collect::<Vec<_>>());
        assert!(p.expected_ids().all(|id| !id.is_null()));
        let Some(v) = must_be_json(data, "read") else { return };
        let msgs: Vec<&Value> = match &v {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        assert_eq!(msgs.len(), p.entries.len());
        for (m, e) in msgs.iter().zip(&p.entries) {
            let id = m.get("id").filter(|v| !v.is_null());
            assert_eq!(e.id.as_ref(), id, "id of {m}");
            assert_eq!(e.method.as_deref(), m.get("method").and_then(Value::as_str), "method of {m}");
        }
    }
    // The same message written canonically (no duplicate keys) must be readable when it is
    // shaped like a request, whatever its params hold.
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let shaped = match &v {
            Value::Array(a) => a.iter().all(request_shaped),
            one => request_shaped(one),
        };
        if shaped {
            let canonical = serde_json::to_vec(&v).unwrap_or_default();
            if let Err(e) = parse_request(&canonical, false) {
                panic!("well-shaped request refused: {e:?}: {}", String::from_utf8_lossy(&canonical));
            }
        }
    }
}

/// Whether `v` is shaped like a response message `parse_response` must read.
fn response_shaped(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    let code_ok = |e: &Value| e.get("code").is_some_and(|c| c.as_i64().is_some());
    matches!(o.get("jsonrpc"), None | Some(Value::Null | Value::String(_)))
        && match o.get("error") {
            None => true,
            Some(e) => e.is_object() && code_ok(e),
        }
}

/// `parse_response`: reads every well-shaped answer, and agrees with a plain JSON reading on
/// `isError` and error codes.
pub fn jsonrpc_response(data: &[u8]) {
    let parsed = parse_response(data);
    if let Ok(body) = &parsed {
        let Some(v) = must_be_json(data, "read") else { return };
        let msgs = match body {
            ResponseBody::One(m) => vec![m],
            ResponseBody::Many(ms) => ms.iter().collect(),
        };
        let values: Vec<&Value> = match &v {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        assert_eq!(msgs.len(), values.len());
        for (m, v) in msgs.iter().zip(values) {
            if let Some(e) = &m.error {
                assert_eq!(Some(e.code), v.get("error").and_then(|e| e.get("code")).and_then(Value::as_i64));
            }
            if let Some(r) = &m.result {
                // With repeated `isError` keys both readings keep the last.
                let flag = v.get("result").and_then(|r| r.get("isError")).and_then(Value::as_bool).unwrap_or(false);
                assert_eq!(r.is_error, flag, "isError of {v}");
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let shaped = match &v {
            Value::Array(a) => a.iter().all(response_shaped),
            one => response_shaped(one),
        };
        if shaped {
            let canonical = serde_json::to_vec(&v).unwrap_or_default();
            if let Err(e) = parse_response(&canonical) {
                panic!("well-shaped answer refused: {e}: {}", String::from_utf8_lossy(&canonical));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SSE

#[derive(Debug, PartialEq, Eq, Clone)]
enum Ev {
    Message(Vec<u8>),
    Oversized,
}

fn sse_events(limit: usize, data: &[u8], cuts: &[(usize, usize)]) -> Vec<Ev> {
    let mut p = SseParser::new(limit);
    let mut out = Vec::new();
    for &(a, b) in cuts {
        p.feed(&data[a..b], |e| {
            out.push(match e {
                SseEvent::Message(d) => Ev::Message(d.to_vec()),
                SseEvent::Oversized => Ev::Oversized,
            });
            true
        });
    }
    out
}

/// The WHATWG event-stream interpretation, on the whole input at once, with no bound.
fn sse_reference(data: &[u8]) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut has_data = false;
    let mut is_message = true;
    let mut i = 0;
    while i < data.len() {
        let end = data[i..].iter().position(|&b| b == b'\n' || b == b'\r').map(|p| i + p);
        let Some(end) = end else { break }; // an unterminated last line is never processed
        let line = &data[i..end];
        i = end + 1;
        if data[end] == b'\r' && data.get(i) == Some(&b'\n') {
            i += 1;
        }
        if line.is_empty() {
            if has_data && is_message {
                let d = buf.strip_suffix(b"\n").unwrap_or(&buf).to_vec();
                out.push(Ev::Message(d));
            }
            buf.clear();
            has_data = false;
            is_message = true;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                buf.extend_from_slice(value);
                buf.push(b'\n');
                has_data = true;
            }
            b"event" => is_message = value.is_empty() || value == b"message",
            _ => {}
        }
    }
    out
}

/// `SseParser::feed`: the same events for every split of the stream into chunks; with a bound
/// larger than the stream, the events the WHATWG algorithm gives; past the bound, an event is
/// reported oversized, never handed out cut.
pub fn sse(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else { return };
    let limit = [8, 64, 1024, 1 << 20][usize::from(sel & 3)];
    let all = chunkings(stream);
    let whole = sse_events(limit, stream, &all[0]);
    for cuts in &all[1..] {
        assert_eq!(sse_events(limit, stream, cuts), whole, "chunking {cuts:?} of {:?}", String::from_utf8_lossy(stream));
    }
    for e in &whole {
        if let Ev::Message(d) = e {
            assert!(d.len() < limit, "event of {} bytes past the bound {limit}", d.len());
        }
    }
    if limit > stream.len() {
        assert_eq!(whole, sse_reference(stream), "differs from the WHATWG reading of {:?}", String::from_utf8_lossy(stream));
    }
}

// ---------------------------------------------------------------------------------------------
// classification

/// `ResponseObserver`: the same verdict for every chunking of the body; a verdict once the
/// stream ended; nothing more after a verdict.
///
/// Input: `[head selector][policy bits] request-body 0xff response-body`.
pub fn classify(data: &[u8]) {
    let [sel, bits, rest @ ..] = data else { return };
    let (request, body) = split_sep(rest);
    let status = [200, 200, 200, 202, 400, 404, 429, 500, 503, 204, 301, 200, 200, 200, 200, 299][usize::from(sel & 15)];
    let content_type = [
        Some("application/json"),
        Some("text/event-stream"),
        Some("application/json; charset=utf-8"),
        Some("Text/Event-Stream;charset=UTF-8"),
        None,
        Some("text/html"),
        Some(" application/json "),
        Some("text/plain"),
    ][usize::from((sel >> 4) & 7)];
    let method = if sel & 0x80 != 0 { HttpMethod::Other } else { HttpMethod::Post };
    let policy = FailurePolicy {
        http_5xx: bits & 1 != 0,
        http_429: bits & 2 != 0,
        tool_errors: bits & 4 != 0,
        malformed: bits & 8 != 0,
        ..FailurePolicy::default()
    };
    let limit = [16, 256, 4096, 1 << 20][usize::from((bits >> 4) & 3)];
    let expected = if bits & 0x40 != 0 {
        None
    } else {
        parse_request(request, false).ok().map(|p| p.expected_ids().cloned().collect::<Vec<_>>())
    };
    let head = ResponseHead { status, content_type, local_reply: None };

    let run = |cuts: &[(usize, usize)]| -> Option<Outcome> {
        let mut o = ResponseObserver::new(expected.clone(), limit);
        if let Some(v) = o.on_headers(head, method, &policy) {
            assert_eq!(o.verdict(), Some(v));
            return Some(v);
        }
        let n = cuts.len();
        let mut verdict = None;
        for (i, &(a, b)) in cuts.iter().enumerate() {
            let got = o.on_body(&body[a..b], i + 1 == n, &policy);
            match (verdict, got) {
                (None, v) => verdict = v,
                (Some(_), Some(v)) => panic!("a second verdict {v:?} after {verdict:?}"),
                (Some(_), None) => {}
            }
        }
        assert!(verdict.is_some(), "no verdict at the end of the stream");
        assert_eq!(o.verdict(), verdict);
        verdict
    };
    let all = chunkings(body);
    let whole = run(&all[0]);
    for cuts in &all[1..] {
        assert_eq!(run(cuts), whole, "chunking {cuts:?}");
    }
    if let Some(Outcome::Failure(k)) = whole {
        let allowed = match k {
            FailureKind::Http5xx => policy.http_5xx,
            FailureKind::Http429 => policy.http_429,
            FailureKind::ToolError => policy.tool_errors,
            FailureKind::Malformed => policy.malformed,
            _ => true,
        };
        assert!(allowed, "{k:?} counted although the policy turns it off");
    }
}

// ---------------------------------------------------------------------------------------------
// breaker codec

/// `codec::decode`: what decodes encodes back to the same bytes and the same state, and the
/// state machine runs on it without panicking (decoded bytes are exactly what it is given).
pub fn breaker_codec(data: &[u8]) {
    let Ok(state) = codec::decode(data) else { return };
    let mut again = Vec::new();
    codec::encode(&state, &mut again);
    assert_eq!(again, data, "encode(decode(x)) != x for {state:?}");
    assert_eq!(codec::decode(&again).as_ref(), Ok(&state));

    let kind = match &state.window {
        Window::Count(_) => WindowKind::Count,
        Window::Time(_) => WindowKind::Time,
    };
    // The window's fields are private to core: find its size by asking which policy it fits.
    let Some(size) = (1..=1000).find(|&n| state.window.fits(kind, n)) else {
        panic!("decoded a window no policy fits: {state:?}")
    };
    let t = match state.phase {
        Phase::Closed => state.closed_since_ms,
        Phase::Open { until_ms } => until_ms,
        Phase::HalfOpen { since_ms, .. } => since_ms,
    };
    let times = [0, t.saturating_sub(1), t, t.saturating_add(1), t.saturating_add(30_001), u64::MAX];
    for probes in [1, 3, 100] {
        let Ok(policy) = BreakerPolicy {
            window_kind: kind,
            window_size: size,
            minimum_calls: 1,
            half_open_probes: probes,
            ..BreakerPolicy::default()
        }
        .validate() else {
            continue;
        };
        for failed in [false, true] {
            let mut s: BreakerState = state.clone();
            for &now in &times {
                let _ = s.stats(now);
                let a = s.admit(&policy, now);
                let (probe, epoch) = match a.value {
                    Admission::Allowed { epoch } => (false, epoch),
                    Admission::Probe { epoch } => (true, epoch),
                    Admission::Rejected { .. } => continue,
                };
                let _ = s.record(&policy, CallRecord { failed, slow: !failed, probe, epoch }, now);
                let _ = s.release_probe(epoch);
                let mut buf = Vec::new();
                codec::encode(&s, &mut buf);
                assert_eq!(codec::decode(&buf).as_ref(), Ok(&s), "a state the machine made does not decode");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// trust wire types

/// Numbers equal, floats within a rounding step (serde_json's default float parser is not
/// guaranteed to round-trip the last bit).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(p), Some(q)) => (p - q).abs() <= f64::EPSILON * p.abs().max(q.abs()) * 4.0,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same_json(p, q)))
        }
        _ => a == b,
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(data: &[u8]) -> Option<T> {
    let x: T = serde_json::from_slice(data).ok()?;
    let text = serde_json::to_vec(&x).unwrap_or_else(|e| panic!("cannot write back what was read: {e}"));
    let y: T = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("cannot read back what was written: {e}"));
    let (a, b) = (serde_json::to_value(&x).unwrap_or_default(), serde_json::to_value(&y).unwrap_or_default());
    assert!(same_json(&a, &b), "round trip changed {a} into {b}");
    Some(x)
}

/// The aggregator's and the sidecar's documents: what reads writes back the same, and the
/// helpers used on them do not panic.
pub fn trust_wire(data: &[u8]) {
    if let Some(b) = round_trip::<SignalBatch>(data) {
        for r in &b.servers {
            // What the aggregator computes from a report.
            let _ = (r.outcomes.total(), r.outcomes.failure_total());
        }
    }
    let _ = round_trip::<RatingRequest>(data);
    let _ = round_trip::<FlagRequest>(data);
    if let Some(doc) = round_trip::<ScoresDocument>(data) {
        let table = TrustTable::from_document(&doc);
        for s in &doc.servers {
            assert!(table.get(&s.server).is_some());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tool hints

/// `learn_tools`: never past `MAX_TOOLS`, learning the same answer twice changes nothing, and a
/// tool is only learned from JSON that names it.
pub fn learn_tools_target(data: &[u8]) {
    let mut catalog = ToolCatalog::new();
    let learned = learn_tools(data, &mut catalog);
    assert!(catalog.len() <= MAX_TOOLS);
    if !learned {
        assert!(catalog.is_empty());
        return;
    }
    let Some(v) = must_be_json(data, "learned from") else { return };
    let mut twice = catalog.clone();
    assert!(learn_tools(data, &mut twice));
    assert_eq!(twice, catalog);
    let listed: Vec<&str> = v
        .get("result")
        .and_then(|r| r.get("tools"))
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    for name in catalog.keys() {
        assert!(listed.contains(&name.as_str()), "learned `{name}`, which is not listed");
    }
}

// ---------------------------------------------------------------------------------------------
// degraded answers

/// `Unavailable::respond`: the answer is JSON, echoes every id the request carried, and the
/// classifier reads it as a well-formed answer to that request (never `malformed`).
///
/// Input: `[flags][retry lo][retry hi] name-header 0xff request-body`.
pub fn degrade(data: &[u8]) {
    let [flags, lo, hi, rest @ ..] = data else { return };
    let (name_header, body) = split_sep(rest);
    let name_header = std::str::from_utf8(name_header).ok().filter(|_| flags & 0x40 != 0);
    let method_header = [None, Some("tools/call"), Some("tools/list"), Some("ping")][usize::from(flags & 3)];
    let names_from_headers = method_header.is_some();
    let request = parse_request(body, names_from_headers).ok();
    let reason = match (flags >> 2) & 3 {
        0 => Reason::CircuitOpen,
        1 => Reason::UpstreamFailed(FailureKind::ConnectFailure),
        2 => Reason::Untrusted { quarantined: true },
        _ => Reason::UpstreamFailed(FailureKind::Http5xx),
    };
    let retry_ms = u64::from(u16::from_le_bytes([*lo, *hi])) * u64::from(1 + (flags >> 7)) * 997;
    let clusters = vec![
        ClusterStatus { cluster: "weather_primary", state: "open", retry_after_ms: retry_ms },
        ClusterStatus { cluster: "weather_backup", state: "half_open", retry_after_ms: retry_ms / 3 },
    ];
    let u = Unavailable {
        server: "weather",
        reason,
        clusters: if flags & 0x10 != 0 { clusters } else { Vec::new() },
        fallbacks_configured: usize::from((flags >> 5) & 1),
        error_code: -32050,
        modern_protocol: flags & 0x20 != 0,
        maybe_ran: flags & 0x80 != 0,
        detail: None,
    };
    let r = u.respond(request.as_ref(), method_header, name_header);
    assert!(r.retry_after_s >= 1);
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("degraded body is not JSON: {e}"));
    let ids: Vec<Value> = request.as_ref().map(|p| p.expected_ids().cloned().collect()).unwrap_or_default();
    if r.status == 503 {
        assert!(ids.is_empty(), "503 although the request carried ids {ids:?}");
        assert_eq!(v.get("id"), Some(&Value::Null));
    } else {
        assert_eq!(r.status, 200);
        let answers: Vec<&Value> = match &v {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        let echoed: Vec<Value> = answers.iter().map(|a| a.get("id").cloned().unwrap_or(Value::Null)).collect();
        assert_eq!(echoed, ids, "ids not echoed in order");
        assert_eq!(v.is_array(), request.as_ref().is_some_and(|p| p.batch));
    }
    // The agent's SDK and our own classifier must both read it as an answer to the request.
    let policy = FailurePolicy::default();
    let mut o = ResponseObserver::new(request.as_ref().map(|_| ids.clone()), 1 << 20);
    let head = ResponseHead { status: r.status, content_type: Some("application/json"), local_reply: None };
    let verdict = match o.on_headers(head, HttpMethod::Post, &policy) {
        Some(v) => v,
        None => o.on_body(&r.body, true, &policy).unwrap_or(Outcome::Unknown),
    };
    assert_ne!(verdict, Outcome::Failure(FailureKind::Malformed), "our own degraded answer judged malformed: {v}");
}

// ---------------------------------------------------------------------------------------------
// inspect_tools_list

/// `[selector] body`: selector bits 0-1 pick tools/prompts/resources/templates, bit 2 a small
/// evidence bound and description limit, bit 3 pins (the body is inspected twice, as a rug pull
/// would be seen). The same body also goes through `inspect_tool_result` and
/// `protocol::check_response`.
pub fn inspect_tools_list(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else { return };
    let kind = [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::ResourceTemplates][usize::from(sel & 3)];
    // Compiled once: the filter compiles at configuration time, not per answer.
    static BUILTIN: std::sync::OnceLock<Inspector> = std::sync::OnceLock::new();
    static SMALL: std::sync::OnceLock<Inspector> = std::sync::OnceLock::new();
    let insp = if sel & 4 != 0 {
        SMALL.get_or_init(|| {
            Inspector::from_json(br#"{"evidence_max_chars":16,"max_description_chars":64,"policy":{"medium":"strip"}}"#).unwrap()
        })
    } else {
        BUILTIN.get_or_init(Inspector::builtin)
    };
    let max = insp.limits.evidence_max_chars;
    let v = if sel & 8 != 0 && kind == ListKind::Tools {
        let mut pins = ToolPins::new(4, 2);
        inspect::inspect_tools_list_pinned(insp, "s", body, &mut pins);
        inspect::inspect_tools_list_pinned(insp, "s", body, &mut pins)
    } else {
        inspect::inspect_list(insp, "s", kind, body)
    };
    assert!(v.findings.len() <= inspect::MAX_FINDINGS);
    assert_eq!(v.action == Action::Pass, v.findings.is_empty(), "{:?}", v.findings);
    for f in &v.findings {
        assert!(f.evidence.chars().count() <= max, "evidence of {} chars: {:?}", f.evidence.chars().count(), f.evidence);
        assert!(f.field.chars().count() <= inspect::MAX_FIELD_CHARS);
        assert!(f.tool.as_ref().is_none_or(|t| t.chars().count() <= inspect::MAX_FIELD_CHARS));
        let e = mcp_warden_core::trust::wire::SecurityEvent::from(f);
        assert_eq!((e.rule.as_str(), e.severity), (f.rule.as_str(), f.severity));
    }
    assert!(v.stripped.iter().all(|s| v.items.iter().any(|i| &i.name == s)), "stripped an item never listed");
    match &v.rewritten {
        None => assert!(v.stripped.is_empty()),
        Some(out) => {
            assert_eq!(v.action, Action::Strip);
            assert!(!v.stripped.is_empty());
            // A server's body serde_json refuses (a lone surrogate escape) may still be rewritten:
            // the agent's parser may accept it. Then the rewrite must be refused the same way.
            let Ok(before) = serde_json::from_slice::<Value>(body) else {
                assert!(serde_json::from_slice::<Value>(out).is_err() || std::str::from_utf8(body).is_ok());
                let again = inspect::inspect_list(insp, "s", kind, out);
                assert!(again.stripped.is_empty(), "the rewrite still holds entries to strip: {:?}", again.stripped);
                return;
            };
            let after: Value = serde_json::from_slice(out).unwrap_or_else(|e| panic!("rewrite is not JSON ({e}): {}", String::from_utf8_lossy(out)));
            let key = kind.key();
            let n = |v: &Value| v["result"][key].as_array().map(Vec::len);
            assert_eq!(n(&after).map(|a| a + v.stripped.len()), n(&before), "rewrite dropped or kept the wrong number of items");
            let mut b = before.clone();
            let mut a = after.clone();
            b["result"][key] = Value::Null;
            a["result"][key] = Value::Null;
            assert_eq!(a, b, "the rewrite changed more than the list");
            let again = inspect::inspect_list(insp, "s", kind, out);
            assert!(again.stripped.is_empty(), "the rewrite still holds tools to strip: {:?}", again.stripped);
        }
    }
    let r = inspect::inspect_tool_result(insp, "s", Some("t"), body);
    assert_ne!(r.action, Action::Strip);
    assert!(r.findings.iter().all(|f| f.evidence.chars().count() <= max));
    let ids = [Value::from(1)];
    let _ = inspect::protocol::check_response(Some(&ids), body, 1 << 20);
}
