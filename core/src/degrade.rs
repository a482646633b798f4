//! What the agent gets when its server is unavailable: a well-formed MCP answer that says what
//! is unavailable, why, and when to try again — never a hang or a proxy's error page.
//!
//! The contract (also in the README):
//! - `tools/call`: HTTP 200, a normal tool result with `isError: true` and a text the model can
//!   read, plus the same facts in `_meta["dev.mcp-warden/unavailable"]`;
//! - any other request: HTTP 200, a JSON-RPC error with the configured code (default -32050)
//!   and `data` = `{server, reason, retry_after, ...}`;
//! - a batch: an array with one such answer per request in it;
//! - notifications only, GET, DELETE, or a body that cannot be read: HTTP 503 with the error
//!   object (id `null`);
//! - always a `Retry-After` header, in whole seconds.

use crate::mcp::jsonrpc::ParsedRequest;
use crate::outcome::FailureKind;
use serde_json::{json, Map, Value};

/// Why nothing could serve the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Every cluster's breaker is open (or busy probing).
    CircuitOpen,
    /// The chosen cluster failed this very request (Envoy could not reach it, or it answered 5xx).
    UpstreamFailed(FailureKind),
    /// Every cluster is quarantined or under the minimum trust (some may also be open).
    Untrusted { quarantined: bool },
    /// The server answered, but the security policy withheld the answer (see `detail`).
    Blocked,
}

impl Reason {
    /// Stable machine-readable name (`data.reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::CircuitOpen => "circuit_open",
            Reason::UpstreamFailed(_) => "upstream_failed",
            Reason::Untrusted { quarantined: true } => "quarantined",
            Reason::Untrusted { quarantined: false } => "low_trust",
            Reason::Blocked => "blocked",
        }
    }
}

/// The state of one cluster as the agent is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus<'a> {
    pub cluster: &'a str,
    /// `open`, `half_open` (probing, no slot free), `failed`, `quarantined` or `low_trust`.
    pub state: &'static str,
    pub retry_after_ms: u64,
}

/// Everything a degraded answer says.
#[derive(Debug, Clone)]
pub struct Unavailable<'a> {
    pub server: &'a str,
    pub reason: Reason,
    /// The primary first, then the fallbacks tried.
    pub clusters: Vec<ClusterStatus<'a>>,
    pub fallbacks_configured: usize,
    pub error_code: i64,
    /// The request spoke protocol 2026-07-28 or later, whose results carry `resultType`.
    pub modern_protocol: bool,
    /// The failed call reached the server and was not safe to repeat: it may have run.
    pub maybe_ran: bool,
    /// What exactly happened, when the reason alone does not say (the rules that blocked).
    pub detail: Option<&'a str>,
}

/// True for protocol versions whose results must carry `resultType` (2026-07-28 and later).
pub fn is_modern_protocol(version: Option<&str>) -> bool {
    version.is_some_and(|v| v >= "2026-07-28")
}

/// A degraded answer ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after_s: u64,
}

impl Unavailable<'_> {
    /// Seconds until the soonest cluster may be tried again (at least 1).
    pub fn retry_after_s(&self) -> u64 {
        let ms = self.clusters.iter().map(|c| c.retry_after_ms).min().unwrap_or(1000);
        ms.div_ceil(1000).max(1)
    }

    /// The sentence the agent (and its model) reads.
    pub fn message(&self, tool: Option<&str>) -> String {
        let subject = match tool {
            Some(t) => format!("Tool '{t}' on MCP server '{}'", self.server),
            None => format!("MCP server '{}'", self.server),
        };
        let why = match self.reason {
            Reason::CircuitOpen => "circuit open after repeated failures".to_string(),
            Reason::UpstreamFailed(kind) => kind.describe().to_string(),
            Reason::Untrusted { quarantined: true } => "quarantined by the operators' trust policy".to_string(),
            Reason::Untrusted { quarantined: false } => "its trust score is under the minimum".to_string(),
            Reason::Blocked => match self.detail {
                Some(d) => format!("its answer was withheld by the security policy ({d}) and reported to the operators"),
                None => "its answer was withheld by the security policy and reported to the operators".to_string(),
            },
        };
        let retry = self.retry_after_s();
        // Only say what is known: after a failed call the fallbacks were not tried.
        let fallback = match (self.reason, self.fallbacks_configured) {
            (_, 0) => "; no fallback configured",
            (Reason::UpstreamFailed(_) | Reason::Blocked, _) => "",
            (Reason::CircuitOpen | Reason::Untrusted { .. }, 1) => "; its fallback is unavailable too",
            (Reason::CircuitOpen | Reason::Untrusted { .. }, _) => "; every fallback is unavailable too",
        };
        let ran = if self.maybe_ran { " The call may or may not have run on the server; it was not repeated." } else { "" };
        format!("{subject} is unavailable: {why}; retry in {retry} s{fallback}.{ran}")
    }

    fn data(&self) -> Value {
        let mut data = Map::new();
        data.insert("server".into(), json!(self.server));
        data.insert("reason".into(), json!(self.reason.code()));
        if let Reason::UpstreamFailed(kind) = self.reason {
            data.insert("failure".into(), json!(kind.as_str()));
        }
        if self.maybe_ran {
            data.insert("may_have_run".into(), json!(true));
        }
        if let Some(d) = self.detail {
            data.insert("detail".into(), json!(d));
        }
        data.insert("retry_after".into(), json!(self.retry_after_s()));
        data.insert(
            "clusters".into(),
            Value::Array(
                self.clusters
                    .iter()
                    .map(|c| {
                        json!({"cluster": c.cluster, "state": c.state, "retry_after": c.retry_after_ms.div_ceil(1000)})
                    })
                    .collect(),
            ),
        );
        data.insert("fallbacks_configured".into(), json!(self.fallbacks_configured));
        Value::Object(data)
    }

    fn error_object(&self, tool: Option<&str>) -> Value {
        json!({"code": self.error_code, "message": self.message(tool), "data": self.data()})
    }

    fn answer(&self, id: &Value, method: Option<&str>, name: Option<&str>) -> Value {
        if method == Some("tools/call") {
            let text = self.message(name);
            let mut result = json!({
                "content": [{"type": "text", "text": text}],
                "isError": true,
                "_meta": {"dev.mcp-warden/unavailable": self.data()}
            });
            if self.modern_protocol {
                if let Some(obj) = result.as_object_mut() {
                    obj.insert("resultType".into(), json!("complete"));
                }
            }
            json!({"jsonrpc": "2.0", "id": id, "result": result})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "error": self.error_object(None)})
        }
    }

    /// The answer to a POST whose body was read (`request`), or could not be (`None`).
    /// `method_header`/`name_header` come from `Mcp-Method`/`Mcp-Name` when present.
    pub fn respond(
        &self,
        request: Option<&ParsedRequest>,
        method_header: Option<&str>,
        name_header: Option<&str>,
    ) -> DegradedResponse {
        let retry_after_s = self.retry_after_s();
        let answers: Vec<Value> = request
            .map(|r| {
                r.entries
                    .iter()
                    .filter_map(|e| {
                        let id = e.id.as_ref()?;
                        let method = e.method.as_deref().or(method_header);
                        let name = e.name.as_deref().or(name_header);
                        Some(self.answer(id, method, name))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = match (request, answers.len()) {
            (Some(r), n) if n > 0 && r.batch => Value::Array(answers),
            (Some(_), n) if n > 0 => answers.into_iter().next().unwrap_or(Value::Null),
            _ => return self.respond_without_id(),
        };
        DegradedResponse { status: 200, body: body.to_string().into_bytes(), retry_after_s }
    }

    /// The answer to a single request of `method` (tool `name`), cut around its id: `prefix`,
    /// then the id as JSON, then `suffix` is the whole answer. Lets a caller that needs the same
    /// answer for many ids build it once.
    pub fn answer_template(&self, method: Option<&str>, name: Option<&str>) -> Option<(String, String)> {
        const MARK: &str = "\u{1}mcp-warden-id\u{1}";
        let text = self.answer(&json!(MARK), method, name).to_string();
        let mark = json!(MARK).to_string();
        let at = text.find(&mark)?;
        let (prefix, rest) = text.split_at(at);
        Some((prefix.to_string(), rest.get(mark.len()..)?.to_string()))
    }

    /// The answer to notifications, GET and DELETE: 503 with the error object.
    pub fn respond_without_id(&self) -> DegradedResponse {
        let body = json!({"jsonrpc": "2.0", "id": null, "error": self.error_object(None)});
        DegradedResponse { status: 503, body: body.to_string().into_bytes(), retry_after_s: self.retry_after_s() }
    }
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;
    use crate::mcp::jsonrpc::parse_request;

    #[wasm_bindgen_test(unsupported = test)]
    fn an_answer_template_around_the_id_is_the_answer() {
        let u = unavailable(1);
        for (body, method, name) in [
            (r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"increment"}}"#, Some("tools/call"), Some("increment")),
            (r#"{"jsonrpc":"2.0","id":"a\"b","method":"tools/list"}"#, Some("tools/list"), None),
        ] {
            let r = parse_request(body.as_bytes(), false).unwrap();
            let id = r.entries[0].id.clone().unwrap();
            let (prefix, suffix) = u.answer_template(method, name).unwrap();
            let spliced = format!("{prefix}{id}{suffix}");
            assert_eq!(spliced.into_bytes(), u.respond(Some(&r), None, None).body);
        }
    }

    fn unavailable(fallbacks: usize) -> Unavailable<'static> {
        Unavailable {
            server: "weather",
            reason: Reason::CircuitOpen,
            clusters: vec![ClusterStatus { cluster: "weather_primary", state: "open", retry_after_ms: 7_200 }],
            fallbacks_configured: fallbacks,
            error_code: -32050,
            modern_protocol: false,
            maybe_ran: false,
            detail: None,
        }
    }

    fn body(r: &DegradedResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn tool_calls_get_a_readable_tool_error() {
        let req = parse_request(br#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"forecast"}}"#, false)
            .unwrap();
        let r = unavailable(0).respond(Some(&req), None, None);
        assert_eq!(r.status, 200);
        assert_eq!(r.retry_after_s, 8);
        let v = body(&r);
        assert_eq!(v["id"], "c1");
        assert_eq!(v["result"]["isError"], true);
        assert_eq!(
            v["result"]["content"][0]["text"],
            "Tool 'forecast' on MCP server 'weather' is unavailable: circuit open after repeated failures; retry in 8 s; no fallback configured."
        );
        assert_eq!(v["result"]["_meta"]["dev.mcp-warden/unavailable"]["reason"], "circuit_open");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stateless_requests_use_the_method_headers() {
        let req = parse_request(br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"x"}}"#, true).unwrap();
        let mut u = unavailable(1);
        u.modern_protocol = is_modern_protocol(Some("2026-07-28"));
        let v = body(&u.respond(Some(&req), Some("tools/call"), Some("forecast")));
        assert_eq!(v["result"]["resultType"], "complete");
        assert!(!is_modern_protocol(Some("2025-11-25")) && !is_modern_protocol(None));
        assert!(v["result"]["content"][0]["text"].as_str().unwrap().contains("'forecast'"));
        assert!(v["result"]["content"][0]["text"].as_str().unwrap().ends_with("its fallback is unavailable too."));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn other_requests_get_a_json_rpc_error_with_data() {
        let req = parse_request(br#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#, false).unwrap();
        let v = body(&unavailable(2).respond(Some(&req), None, None));
        assert_eq!(v["id"], 9);
        assert_eq!(v["error"]["code"], -32050);
        assert_eq!(v["error"]["data"]["server"], "weather");
        assert_eq!(v["error"]["data"]["retry_after"], 8);
        assert_eq!(v["error"]["data"]["clusters"][0]["state"], "open");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn batches_notifications_and_unreadable_bodies() {
        let req = parse_request(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t"}}]"#,
            false,
        )
        .unwrap();
        let v = body(&unavailable(0).respond(Some(&req), None, None));
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["result"]["isError"], true);

        let note = parse_request(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, false).unwrap();
        let r = unavailable(0).respond(Some(&note), None, None);
        assert_eq!(r.status, 503);
        assert_eq!(body(&r)["id"], Value::Null);
        assert_eq!(unavailable(0).respond(None, None, None).status, 503);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn upstream_failures_say_what_failed() {
        let mut u = unavailable(0);
        u.reason = Reason::UpstreamFailed(FailureKind::ConnectFailure);
        let req = parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#, false).unwrap();
        let v = body(&u.respond(Some(&req), None, None));
        assert_eq!(v["error"]["data"]["failure"], "connect_failure");
        assert_eq!(
            v["error"]["message"],
            "MCP server 'weather' is unavailable: the server refused or dropped the connection; retry in 8 s; no fallback configured."
        );
        u.fallbacks_configured = 2;
        let v = body(&u.respond(Some(&req), None, None));
        assert!(v["error"]["message"].as_str().unwrap().ends_with("retry in 8 s."), "{v}");
        u.maybe_ran = true;
        let v = body(&u.respond(Some(&req), None, None));
        assert!(v["error"]["message"].as_str().unwrap().ends_with("it was not repeated."), "{v}");
    }
}
