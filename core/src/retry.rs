//! When a failed call may be sent again to a fallback within the same agent request.
//!
//! Only when repeating it cannot do harm: a call that never reached the server (connect
//! failure), or a call whose method only reads (`initialize`, `ping`, lists, reads, gets,
//! completions, `server/discover`), or a `tools/call` of a tool whose definition, as the server
//! listed it, says `readOnlyHint` or `idempotentHint`. Everything else gets the degraded answer
//! that says the call may or may not have run. Retries are also rationed by a budget, so a
//! failing primary never doubles the load on its fallback.

use crate::mcp::jsonrpc::ParsedRequest;
use crate::outcome::FailureKind;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Methods that only read, and so may be repeated.
pub const SAFE_METHODS: [&str; 11] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// What a server said about one tool, as far as retries care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ToolHints {
    pub read_only: bool,
    pub idempotent: bool,
}

/// Tool hints per tool name, learned from one server's `tools/list` answers.
pub type ToolCatalog = BTreeMap<String, ToolHints>;

/// Most tools remembered per server.
pub const MAX_TOOLS: usize = 2048;

/// Reads the tool hints out of a `tools/list` result message (JSON-RPC response object).
pub fn learn_tools(message: &[u8], catalog: &mut ToolCatalog) -> bool {
    #[derive(Deserialize)]
    struct Msg {
        result: Option<ListResult>,
        #[serde(default)]
        #[allow(dead_code)]
        id: IgnoredAny,
    }
    #[derive(Deserialize)]
    struct ListResult {
        #[serde(default)]
        tools: Vec<Tool>,
    }
    #[derive(Deserialize)]
    struct Tool {
        name: String,
        #[serde(default)]
        annotations: Option<Annotations>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Annotations {
        #[serde(default)]
        read_only_hint: Option<bool>,
        #[serde(default)]
        idempotent_hint: Option<bool>,
    }
    // Checked whole: serde_json does not check UTF-8 in the strings it skips.
    let Ok(text) = std::str::from_utf8(message) else { return false };
    let Ok(msg) = serde_json::from_str::<Msg>(text) else { return false };
    let Some(result) = msg.result else { return false };
    for tool in result.tools {
        if catalog.len() >= MAX_TOOLS && !catalog.contains_key(&tool.name) {
            break;
        }
        let a = tool.annotations;
        let hints = ToolHints {
            read_only: a.as_ref().and_then(|a| a.read_only_hint).unwrap_or(false),
            idempotent: a.as_ref().and_then(|a| a.idempotent_hint).unwrap_or(false),
        };
        catalog.insert(tool.name, hints);
    }
    true
}

/// Whether every request in the body may be sent again after `failure`: always when the server
/// never saw it (connect failure, no such cluster); after any other failure (reset, timeout,
/// 5xx, 429, a JSON-RPC server error, a malformed answer or a wrong id) when every request only
/// reads (`hints` gives what a server declared about a tool). A tool result with `isError` is an
/// answer, not a failure to repeat.
pub fn is_safe_to_retry(
    request: &ParsedRequest,
    method_header: Option<&str>,
    name_header: Option<&str>,
    hints: impl Fn(&str) -> Option<ToolHints>,
    failure: FailureKind,
) -> bool {
    match failure {
        FailureKind::ConnectFailure | FailureKind::UnknownCluster => return true,
        FailureKind::ToolError => return false,
        _ => {}
    }
    !request.entries.is_empty()
        && request.entries.iter().all(|e| {
            let method = e.method.as_deref().or(method_header);
            match method {
                Some("tools/call") => e
                    .name
                    .as_deref()
                    .or(name_header)
                    .and_then(&hints)
                    .is_some_and(|h| h.read_only || h.idempotent),
                Some(m) => SAFE_METHODS.contains(&m) || m.starts_with("notifications/"),
                None => false,
            }
        })
}

/// A token bucket per VM: each request earns `ratio` of a retry, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    tokens: f64,
    ratio: f64,
    burst: f64,
}

impl RetryBudget {
    pub fn new(ratio: f64, burst: f64) -> Self {
        RetryBudget { tokens: burst, ratio, burst }
    }

    /// Called for every request.
    pub fn earn(&mut self) {
        self.tokens = (self.tokens + self.ratio).min(self.burst);
    }

    /// Takes one retry if the budget allows.
    pub fn try_spend(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Envoy's route timer may still be running while the filter holds a failed answer back:
/// keep this much ahead of it.
pub const ROUTE_TIMER_GUARD_MS: u64 = 100;
/// A hold shorter than this is not worth starting: the failed answer is replaced at once.
pub const MIN_HOLD_MS: u64 = 100;

/// How long the filter may hold a failed answer back while it retries the call or renews its
/// session, or `None` if it must answer at once.
///
/// While the upstream's own answer is still open (`router_done` false: an answer that came from
/// the upstream, whose body may still be on its way), Envoy's route timer keeps running; when it
/// fires, Envoy sends its own 504 page straight to the agent, past every filter. So the hold must
/// end before `forwarded_ms + upstream_timeout_ms`, the moment the request reached the router plus
/// the timeout the filter gave it. With `upstream_timeout_ms` 0 (the route's own timeout, unknown
/// to the filter) only `retry_timeout_ms` bounds it. Envoy's own error replies (connect failure,
/// reset, route timeout) end the router's work, and the hold may take the whole retry time.
pub fn hold_budget_ms(
    now: u64,
    forwarded_ms: u64,
    upstream_timeout_ms: u64,
    retry_timeout_ms: u64,
    router_done: bool,
) -> Option<u64> {
    if router_done || upstream_timeout_ms == 0 {
        return Some(retry_timeout_ms);
    }
    let deadline = forwarded_ms.saturating_add(upstream_timeout_ms).saturating_sub(ROUTE_TIMER_GUARD_MS);
    let left = deadline.saturating_sub(now);
    (left >= MIN_HOLD_MS).then_some(left.min(retry_timeout_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::parse_request;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn catalog() -> ToolCatalog {
        let mut c = ToolCatalog::new();
        let list = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[
            {"name":"echo","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}},
            {"name":"put","annotations":{"idempotentHint":true,"destructiveHint":true}},
            {"name":"increment","annotations":{"readOnlyHint":false}},
            {"name":"plain"}]}}"#;
        assert!(learn_tools(list, &mut c));
        c
    }

    fn safe(body: &[u8], failure: FailureKind) -> bool {
        let r = parse_request(body, false).unwrap();
        let c = catalog();
        is_safe_to_retry(&r, None, None, |t| c.get(t).copied(), failure)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn read_only_and_idempotent_tools_are_safe_others_are_not() {
        let call = |t: &str| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{t}"}}}}"#);
        assert!(safe(call("echo").as_bytes(), FailureKind::Http5xx));
        assert!(safe(call("put").as_bytes(), FailureKind::Timeout));
        assert!(!safe(call("increment").as_bytes(), FailureKind::Reset));
        assert!(!safe(call("plain").as_bytes(), FailureKind::Http5xx));
        assert!(!safe(call("never-listed").as_bytes(), FailureKind::Http5xx));
        // Whatever it is, a call that never reached the server can go elsewhere.
        assert!(safe(call("increment").as_bytes(), FailureKind::ConnectFailure));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reading_methods_are_safe_batches_only_if_all_are() {
        assert!(safe(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, FailureKind::Http5xx));
        assert!(safe(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x"}}"#, FailureKind::Reset));
        assert!(!safe(br#"{"jsonrpc":"2.0","id":1,"method":"sampling/whatever"}"#, FailureKind::Reset));
        assert!(!safe(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"increment"}}]"#,
            FailureKind::Http5xx
        ));
        // A rate-limited or JSON-RPC-erroring server answered: no retry.
        // Every failure kind of a reading call may be repeated; a tool's own error is an answer.
        for kind in FailureKind::ALL {
            let expected = kind != FailureKind::ToolError;
            assert_eq!(safe(br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#, kind), expected, "{kind:?}");
        }
        assert!(!safe(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"increment"}}"#, FailureKind::JsonRpcError));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stateless_requests_use_the_method_headers() {
        let r = parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#, true).unwrap();
        assert!(is_safe_to_retry(&r, Some("tools/call"), Some("echo"), |t| catalog().get(t).copied(), FailureKind::Http5xx));
        assert!(!is_safe_to_retry(&r, Some("tools/call"), Some("increment"), |t| catalog().get(t).copied(), FailureKind::Http5xx));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_hold_ends_before_envoys_route_timer_while_the_upstream_answer_is_open() {
        // Forwarded at 1,000 with a 3 s upstream timeout: Envoy gives up at 4,000.
        assert_eq!(hold_budget_ms(1_050, 1_000, 3_000, 10_000, false), Some(2_850));
        assert_eq!(hold_budget_ms(1_050, 1_000, 3_000, 1_000, false), Some(1_000));
        // Too close to Envoy's timer: answer at once.
        assert_eq!(hold_budget_ms(3_850, 1_000, 3_000, 10_000, false), None);
        assert_eq!(hold_budget_ms(9_000, 1_000, 3_000, 10_000, false), None);
        // Envoy's own error reply ended the router's work: the whole retry time.
        assert_eq!(hold_budget_ms(3_999, 1_000, 3_000, 10_000, true), Some(10_000));
        // The route's own timeout, unknown to the filter: only the retry time bounds it.
        assert_eq!(hold_budget_ms(3_999, 1_000, 0, 10_000, false), Some(10_000));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn budget_rations_retries() {
        let mut b = RetryBudget::new(0.2, 3.0);
        assert!(b.try_spend() && b.try_spend() && b.try_spend());
        assert!(!b.try_spend());
        for _ in 0..5 {
            b.earn();
        }
        assert!(b.try_spend());
        assert!(!b.try_spend());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn learn_tools_invalid_utf8_in_a_skipped_string() {
        // Fuzz regression (fuzz/regressions/learn_tools/invalid-utf8-in-a-skipped-string): hints
        // were learned from a body that is not JSON (broken UTF-8 in a skipped string).
        let mut c = ToolCatalog::new();
        let body = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"x\":\"\xe9\",\"tools\":[{\"name\":\"t\"}]}}";
        assert!(!learn_tools(body, &mut c));
        assert!(c.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn learning_is_bounded_and_tolerant() {
        let mut c = ToolCatalog::new();
        assert!(!learn_tools(b"not json", &mut c));
        assert!(!learn_tools(br#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#, &mut c));
        let many: Vec<String> = (0..3000).map(|i| format!(r#"{{"name":"t{i}"}}"#)).collect();
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{}]}}}}"#, many.join(","));
        assert!(learn_tools(body.as_bytes(), &mut c));
        assert_eq!(c.len(), MAX_TOOLS);
    }
}
