//! The verdict on an upstream's answer to one agent request: did the server do its job?
//!
//! A [`ResponseObserver`] is fed the response headers and then each body chunk as it passes; it
//! decides as early as it can (an SSE stream is judged when the awaited answer arrives, not when
//! the stream ends) and holds at most `inspect_max_bytes` of body.

use super::jsonrpc::{parse_response, ResponseBody, ResponseMsg, AGENT_ERROR_CODES};
use super::sse::{SseEvent, SseParser};
use crate::outcome::{FailureKind, Outcome};
use serde_json::Value;

/// What counts as a failure; built from the plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    pub http_5xx: bool,
    pub http_429: bool,
    /// Inclusive ranges of JSON-RPC error codes that are the server's fault.
    pub server_error_codes: Vec<(i64, i64)>,
    /// Codes never held against a server even inside those ranges (e.g. -32042, URL
    /// elicitation required, is a normal protocol step).
    pub ignored_error_codes: Vec<i64>,
    /// Tool results with `isError: true` count as failures.
    pub tool_errors: bool,
    /// Bodies that are not JSON-RPC count as failures.
    pub malformed: bool,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            http_5xx: true,
            http_429: true,
            server_error_codes: vec![(-32603, -32603), (-32099, -32000)],
            ignored_error_codes: vec![-32042],
            tool_errors: false,
            malformed: true,
        }
    }
}

impl FailurePolicy {
    /// True when a JSON-RPC error with this code is the server's fault.
    pub fn is_server_error(&self, code: i64) -> bool {
        !AGENT_ERROR_CODES.contains(&code)
            && !self.ignored_error_codes.contains(&code)
            && self.server_error_codes.iter().any(|&(lo, hi)| lo <= code && code <= hi)
    }
}

/// Envoy's response flags (the `response.flags` property), as far as they name a failure.
pub mod envoy_flags {
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    pub const LOCAL_RESET: u64 = 0x8;
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    pub const STREAM_IDLE_TIMEOUT: u64 = 0x10000;
    pub const UPSTREAM_MAX_STREAM_DURATION: u64 = 0x80000;
    pub const DURATION_TIMEOUT: u64 = 0x400000;
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x800000;
    pub const NO_CLUSTER_FOUND: u64 = 0x1000000;
}

/// Maps Envoy's view of a failed upstream call to a failure kind.
pub fn failure_from_envoy(flags: u64, details: &str, status: u16) -> FailureKind {
    use envoy_flags::*;
    if flags & NO_CLUSTER_FOUND != 0 || details.contains("cluster_not_found") {
        FailureKind::UnknownCluster
    } else if flags & (UPSTREAM_REQUEST_TIMEOUT | STREAM_IDLE_TIMEOUT | DURATION_TIMEOUT | UPSTREAM_MAX_STREAM_DURATION) != 0
        || details.contains("timeout")
    {
        FailureKind::Timeout
    } else if flags & (UPSTREAM_CONNECTION_FAILURE | NO_HEALTHY_UPSTREAM | UPSTREAM_OVERFLOW) != 0
        || details.contains("connection_failure")
    {
        FailureKind::ConnectFailure
    } else if flags & (UPSTREAM_REMOTE_RESET | UPSTREAM_CONNECTION_TERMINATION | LOCAL_RESET | UPSTREAM_PROTOCOL_ERROR) != 0
        || details.contains("reset")
    {
        FailureKind::Reset
    } else if status == 504 {
        FailureKind::Timeout
    } else {
        FailureKind::ConnectFailure
    }
}

/// The HTTP method of the agent's request, as far as judging goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// A JSON-RPC message (request, notification, batch) with an answer to judge.
    Post,
    /// GET opens a server-to-client stream; DELETE ends a session. Only their failures count.
    Other,
}

/// Response headers as the observer needs them.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    /// Set when Envoy answered itself (connect failure, timeout, reset): flags and details.
    pub local_reply: Option<(u64, &'a str)>,
}

#[derive(Debug)]
enum Body {
    Json(Vec<u8>),
    Sse(SseParser),
    /// Too large to judge, or nothing to judge.
    Skip,
}

/// Judges one upstream answer as it streams past.
#[derive(Debug)]
pub struct ResponseObserver {
    /// Ids an answer is owed for; `None` when the request body was not read (unknown ids).
    expected: Option<Vec<Value>>,
    answered: usize,
    limit: usize,
    body: Body,
    verdict: Option<Outcome>,
}

impl ResponseObserver {
    /// `expected`: the request's ids (`None` if unknown); `limit`: most body bytes held.
    pub fn new(expected: Option<Vec<Value>>, limit: usize) -> Self {
        ResponseObserver { expected, answered: 0, limit, body: Body::Skip, verdict: None }
    }

    /// The verdict, once there is one.
    pub fn verdict(&self) -> Option<Outcome> {
        self.verdict
    }

    /// Judges the headers; returns the verdict if they settle it.
    pub fn on_headers(&mut self, head: ResponseHead<'_>, method: HttpMethod, policy: &FailurePolicy) -> Option<Outcome> {
        let status = head.status;
        let outcome = if let Some((flags, details)) = head.local_reply {
            Some(Outcome::Failure(failure_from_envoy(flags, details, status)))
        } else if status >= 500 {
            Some(if policy.http_5xx { Outcome::Failure(FailureKind::Http5xx) } else { Outcome::Success })
        } else if status == 429 {
            Some(if policy.http_429 { Outcome::Failure(FailureKind::Http429) } else { Outcome::Success })
        } else if status >= 300 || status == 202 || status == 204 {
            // 4xx: the agent's mistake or an unknown session; 202: a notification accepted.
            Some(Outcome::Success)
        } else if method == HttpMethod::Other {
            // A GET stream or DELETE that opened fine: nothing to count either way.
            Some(Outcome::Unknown)
        } else if self.expected.as_ref().is_some_and(|e| e.is_empty()) {
            Some(Outcome::Success)
        } else {
            let ct = head.content_type.unwrap_or("");
            let media = ct.split(';').next().unwrap_or("").trim();
            if media.eq_ignore_ascii_case("application/json") {
                self.body = Body::Json(Vec::new());
                None
            } else if media.eq_ignore_ascii_case("text/event-stream") {
                self.body = Body::Sse(SseParser::new(self.limit));
                None
            } else if policy.malformed {
                Some(Outcome::Failure(FailureKind::Malformed))
            } else {
                Some(Outcome::Success)
            }
        };
        if outcome.is_some() {
            self.verdict = outcome;
        }
        outcome
    }

    /// Feeds a body chunk; returns the verdict when this chunk settles it.
    pub fn on_body(&mut self, chunk: &[u8], end_of_stream: bool, policy: &FailurePolicy) -> Option<Outcome> {
        if self.verdict.is_some() {
            return None;
        }
        let verdict = match &mut self.body {
            Body::Skip => end_of_stream.then_some(Outcome::Success),
            Body::Json(buf) => {
                if buf.len() + chunk.len() > self.limit {
                    // Too large to judge within the bound: let it pass and say nothing against it.
                    self.body = Body::Skip;
                    end_of_stream.then_some(Outcome::Success)
                } else {
                    buf.extend_from_slice(chunk);
                    if end_of_stream {
                        let buf = std::mem::take(buf);
                        Some(self.judge_json(&buf, policy))
                    } else {
                        None
                    }
                }
            }
            Body::Sse(parser) => {
                let mut parser = std::mem::replace(parser, SseParser::new(0));
                let mut found = None;
                parser.feed(chunk, |event| {
                    found = self.judge_sse_event(event, policy);
                    found.is_none()
                });
                self.body = Body::Sse(parser);
                // A stream that ends before the answer: the server may close it on purpose (the
                // agent resumes with GET and Last-Event-ID), so it says nothing.
                found.or_else(|| end_of_stream.then_some(Outcome::Unknown))
            }
        };
        if verdict.is_some() {
            self.verdict = verdict;
            self.body = Body::Skip;
        }
        verdict
    }

    fn judge_json(&mut self, body: &[u8], policy: &FailurePolicy) -> Outcome {
        let msgs = match parse_response(body) {
            Ok(ResponseBody::One(m)) => vec![m],
            Ok(ResponseBody::Many(ms)) => ms,
            Err(_) => return malformed(policy),
        };
        let mut verdict = None;
        for m in &msgs {
            match self.judge_message(m, policy) {
                Some(Outcome::Failure(k)) => return Outcome::Failure(k),
                Some(o) => verdict = Some(o),
                None => {}
            }
        }
        match &self.expected {
            Some(ids) if self.answered < ids.len() => malformed(policy),
            _ => verdict.unwrap_or(Outcome::Success),
        }
    }

    fn judge_sse_event(&mut self, event: SseEvent<'_>, policy: &FailurePolicy) -> Option<Outcome> {
        let data = match event {
            SseEvent::Message(d) => d,
            SseEvent::Oversized => return None,
        };
        if data.iter().all(u8::is_ascii_whitespace) {
            return None; // priming events carry only an id
        }
        let msgs = match parse_response(data) {
            Ok(ResponseBody::One(m)) => vec![m],
            Ok(ResponseBody::Many(ms)) => ms,
            Err(_) => return Some(malformed(policy)),
        };
        for m in &msgs {
            if let Some(Outcome::Failure(k)) = self.judge_message(m, policy) {
                return Some(Outcome::Failure(k));
            }
        }
        match &self.expected {
            Some(ids) if self.answered >= ids.len() => Some(Outcome::Success),
            None if self.answered > 0 => Some(Outcome::Success),
            _ => None,
        }
    }

    /// One message: `None` for server-to-client requests and notifications.
    fn judge_message(&mut self, m: &ResponseMsg, policy: &FailurePolicy) -> Option<Outcome> {
        if m.jsonrpc.as_deref() != Some("2.0") {
            return Some(malformed(policy));
        }
        if m.method.is_some() {
            return None;
        }
        let outcome = match (&m.result, &m.error) {
            (Some(r), None) if r.is_error && policy.tool_errors => Outcome::Failure(FailureKind::ToolError),
            (Some(_), None) => Outcome::Success,
            (None, Some(e)) if policy.is_server_error(e.code) => Outcome::Failure(FailureKind::JsonRpcError),
            (None, Some(_)) => Outcome::Success,
            _ => return Some(malformed(policy)),
        };
        let id = m.id.as_ref().filter(|v| !v.is_null());
        match (&self.expected, id) {
            (Some(ids), Some(id)) if ids.contains(id) => self.answered += 1,
            // An error with a null id answers a request the server could not read.
            (_, None) if m.error.is_some() => self.answered += 1,
            (None, Some(_)) => self.answered += 1,
            _ => return Some(malformed(policy)),
        }
        Some(outcome)
    }
}

fn malformed(policy: &FailurePolicy) -> Outcome {
    if policy.malformed {
        Outcome::Failure(FailureKind::Malformed)
    } else {
        Outcome::Success
    }
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;
    use serde_json::json;

    const JSON: Option<&str> = Some("application/json");
    const SSE: Option<&str> = Some("text/event-stream");

    fn head(status: u16, ct: Option<&'static str>) -> ResponseHead<'static> {
        ResponseHead { status, content_type: ct, local_reply: None }
    }

    /// Runs an answer through an observer waiting for `ids`, body split in `chunk`-byte pieces.
    fn judge(ids: Option<Vec<Value>>, h: ResponseHead<'_>, body: &[u8], chunk: usize) -> Option<Outcome> {
        let p = FailurePolicy::default();
        let mut o = ResponseObserver::new(ids, 1 << 16);
        if let Some(v) = o.on_headers(h, HttpMethod::Post, &p) {
            return Some(v);
        }
        let pieces: Vec<&[u8]> = if body.is_empty() { vec![&b""[..]] } else { body.chunks(chunk).collect() };
        let n = pieces.len();
        for (i, c) in pieces.into_iter().enumerate() {
            if let Some(v) = o.on_body(c, i + 1 == n, &p) {
                return Some(v);
            }
        }
        o.verdict()
    }

    fn id1() -> Option<Vec<Value>> {
        Some(vec![json!(1)])
    }

    const F: fn(FailureKind) -> Option<Outcome> = |k| Some(Outcome::Failure(k));
    const OK: Option<Outcome> = Some(Outcome::Success);

    #[wasm_bindgen_test(unsupported = test)]
    fn json_answers() {
        let cases: Vec<(&str, &[u8], Option<Outcome>)> = vec![
            ("result", br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, OK),
            ("tool isError is the tool's business", br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[]}}"#, OK),
            ("internal error", br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x"}}"#, F(FailureKind::JsonRpcError)),
            ("implementation server error", br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x"}}"#, F(FailureKind::JsonRpcError)),
            ("invalid params is the agent's mistake", br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#, OK),
            ("unknown method is the agent's mistake", br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}"#, OK),
            ("invalid request is the agent's mistake", br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"x"}}"#, OK),
            ("url elicitation required is protocol", br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32042,"message":"x"}}"#, OK),
            ("not json", b"<html>502 Bad Gateway</html>", F(FailureKind::Malformed)),
            ("not json-rpc 2.0", br#"{"jsonrpc":"1.0","id":1,"result":{}}"#, F(FailureKind::Malformed)),
            ("no jsonrpc", br#"{"id":1,"result":{}}"#, F(FailureKind::Malformed)),
            ("wrong id", br#"{"jsonrpc":"2.0","id":2,"result":{}}"#, F(FailureKind::Malformed)),
            ("both result and error", br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1}}"#, F(FailureKind::Malformed)),
            ("neither", br#"{"jsonrpc":"2.0","id":1}"#, F(FailureKind::Malformed)),
            ("empty body", b"", F(FailureKind::Malformed)),
            ("parse error with null id", br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#, OK),
        ];
        for (name, body, want) in cases {
            for chunk in [1, 7, 4096] {
                assert_eq!(judge(id1(), head(200, JSON), body, chunk), want, "{name} (chunks of {chunk})");
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn batch_answers_must_cover_every_id() {
        let ids = Some(vec![json!(1), json!("b")]);
        let full = br#"[{"jsonrpc":"2.0","id":"b","result":{}},{"jsonrpc":"2.0","id":1,"result":{}}]"#;
        assert_eq!(judge(ids.clone(), head(200, JSON), full, 5), OK);
        let partial = br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#;
        assert_eq!(judge(ids.clone(), head(200, JSON), partial, 5), F(FailureKind::Malformed));
        let one_bad = br#"[{"jsonrpc":"2.0","id":"b","error":{"code":-32603,"message":"x"}},{"jsonrpc":"2.0","id":1,"result":{}}]"#;
        assert_eq!(judge(ids, head(200, JSON), one_bad, 5), F(FailureKind::JsonRpcError));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn sse_answers_are_judged_when_the_answer_arrives() {
        let stream = b"id: 0\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\nid: 5\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n\n";
        for chunk in [1, 3, 10, 1000] {
            assert_eq!(judge(id1(), head(200, SSE), stream, chunk), OK, "chunks of {chunk}");
        }
        let p = FailurePolicy::default();
        let mut o = ResponseObserver::new(id1(), 1 << 16);
        assert_eq!(o.on_headers(head(200, SSE), HttpMethod::Post, &p), None);
        // The verdict comes with the answer's event, before the stream ends.
        assert_eq!(o.on_body(stream, false, &p), OK);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn sse_failures() {
        let bad_frame = b"event: message\ndata: {not json\n\n";
        assert_eq!(judge(id1(), head(200, SSE), bad_frame, 4), F(FailureKind::Malformed));
        let error = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32603,\"message\":\"boom\"}}\n\n";
        assert_eq!(judge(id1(), head(200, SSE), error, 4), F(FailureKind::JsonRpcError));
        let wrong_id = b"data: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}\n\n";
        assert_eq!(judge(id1(), head(200, SSE), wrong_id, 4), F(FailureKind::Malformed));
        // A server-to-client request on the stream is fine; the stream then ends unanswered.
        let closed_early = b"data: {\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"sampling/createMessage\",\"params\":{}}\n\n";
        assert_eq!(judge(id1(), head(200, SSE), closed_early, 4), Some(Outcome::Unknown));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn status_and_envoy_local_replies() {
        assert_eq!(judge(id1(), head(500, JSON), b"", 1), F(FailureKind::Http5xx));
        assert_eq!(judge(id1(), head(503, None), b"", 1), F(FailureKind::Http5xx));
        assert_eq!(judge(id1(), head(429, None), b"", 1), F(FailureKind::Http429));
        assert_eq!(judge(id1(), head(404, None), b"", 1), OK);
        assert_eq!(judge(id1(), head(400, JSON), b"", 1), OK);
        assert_eq!(judge(None, head(202, None), b"", 1), OK);
        assert_eq!(judge(id1(), head(200, Some("text/html")), b"<html>", 1), F(FailureKind::Malformed));
        let local = |flags, details| ResponseHead { status: 503, content_type: Some("text/plain"), local_reply: Some((flags, details)) };
        assert_eq!(
            judge(id1(), local(0x20, "upstream_reset_before_response_started{remote_connection_failure}"), b"", 1),
            F(FailureKind::ConnectFailure)
        );
        assert_eq!(judge(id1(), local(0x4, "response_timeout"), b"", 1), F(FailureKind::Timeout));
        assert_eq!(judge(id1(), local(0x10, "upstream_reset_before_response_started{remote_reset}"), b"", 1), F(FailureKind::Reset));
        assert_eq!(judge(id1(), local(0, "cluster_not_found"), b"", 1), F(FailureKind::UnknownCluster));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn notifications_and_streams_without_bodies_to_judge() {
        let p = FailurePolicy::default();
        let mut o = ResponseObserver::new(Some(vec![]), 100);
        assert_eq!(o.on_headers(head(200, JSON), HttpMethod::Post, &p), OK);
        let mut get = ResponseObserver::new(None, 100);
        assert_eq!(get.on_headers(head(200, SSE), HttpMethod::Other, &p), Some(Outcome::Unknown));
        let mut get_down = ResponseObserver::new(None, 100);
        assert_eq!(get_down.on_headers(head(502, None), HttpMethod::Other, &p), F(FailureKind::Http5xx));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bodies_past_the_bound_are_not_held() {
        let p = FailurePolicy::default();
        let mut o = ResponseObserver::new(id1(), 10);
        o.on_headers(head(200, JSON), HttpMethod::Post, &p);
        assert_eq!(o.on_body(&[b'x'; 8], false, &p), None);
        assert_eq!(o.on_body(&[b'x'; 8], false, &p), None);
        assert_eq!(o.on_body(&[b'x'; 8], true, &p), OK);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn tool_errors_count_when_configured() {
        let p = FailurePolicy { tool_errors: true, ..Default::default() };
        let mut o = ResponseObserver::new(id1(), 1000);
        o.on_headers(head(200, JSON), HttpMethod::Post, &p);
        let v = o.on_body(br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true}}"#, true, &p);
        assert_eq!(v, F(FailureKind::ToolError));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn error_code_policy() {
        let p = FailurePolicy::default();
        assert!(p.is_server_error(-32603));
        assert!(p.is_server_error(-32001));
        assert!(!p.is_server_error(-32042));
        assert!(!p.is_server_error(-32602));
        assert!(!p.is_server_error(-1));
        assert!(!p.is_server_error(42));
    }
}
