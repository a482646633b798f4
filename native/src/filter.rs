//! One agent request through the native filter: Envoy's hooks become events of the core's
//! request flow ([`mcp_warden_core::flow`]) and its effects become Envoy callbacks. Nothing is
//! decided here.
//!
//! Two things differ from the wasm host: a request header set by a dynamic module does not make
//! Envoy pick the route again, so setting the route header clears the route cache; and HTTP
//! filters have no timer, so a wake-up goes through [`crate::timer`] and the request's scheduler.

use crate::abi::{self, FilterEnvoyPtr};
use crate::config::Shared;
use crate::env::ProcessEnv;
use crate::host::{self, CalloutAnswer, Map, Stream};
use crate::timer::{self, RequestScheduler};
use mcp_warden_core::flow::{self, CallAnswer, Effect, Event, Flow, Level, ResponseHead};
use std::sync::Arc;

/// The filter's state for one request.
pub struct Filter {
    shared: Arc<Shared>,
    flow: Flow,
    /// (Envoy's callout id, the flow's call id) of calls under way.
    calls: Vec<(u64, u32)>,
    /// The request's scheduler, made on its first wake-up.
    scheduler: Option<Arc<RequestScheduler>>,
    /// The flow paused the request (Envoy buffers it for the filter) / the response.
    request_paused: bool,
    response_paused: bool,
    /// The response headers reached the filter: a local reply can no longer replace them.
    responding: bool,
    /// The filter answered the request itself.
    answered: bool,
    /// A hook panicked: the flow's state is unknown, so it is left alone from then on.
    poisoned: bool,
    /// Test builds: the agent asked this request to panic (at the end of its body).
    #[cfg(feature = "fault-injection")]
    panic_asked: bool,
}

impl Drop for Filter {
    fn drop(&mut self) {
        if let Some(s) = &self.scheduler {
            s.retire();
        }
    }
}

impl Filter {
    pub fn new(shared: Arc<Shared>, _envoy: FilterEnvoyPtr) -> Self {
        Filter {
            shared,
            flow: Flow::new(),
            calls: Vec::new(),
            scheduler: None,
            request_paused: false,
            response_paused: false,
            responding: false,
            answered: false,
            poisoned: false,
            #[cfg(feature = "fault-injection")]
            panic_asked: false,
        }
    }

    /// Hands `event` to the flow and carries out its effects.
    fn run(&mut self, s: Stream, event: Event<'_>) -> flow::Action {
        let shared = Arc::clone(&self.shared);
        let env = ProcessEnv::new(&shared, s);
        let now = host::now_ms();
        let mut out = Vec::new();
        let action = self.flow.on(&env, event, now, &mut out);
        let mut failed = Vec::new();
        while !out.is_empty() {
            for effect in std::mem::take(&mut out) {
                if let Some(call) = self.execute(s, effect) {
                    failed.push(call);
                }
            }
            // A call that could not start is answered at once as failed.
            for call in std::mem::take(&mut failed) {
                self.flow.on(&env, Event::CallDone { call, answer: None }, now, &mut out);
            }
        }
        action
    }

    /// Carries out one effect; returns the id of a call that could not start.
    fn execute(&mut self, s: Stream, effect: Effect) -> Option<u32> {
        let cfg = &self.shared.config;
        match effect {
            Effect::SetRequestHeader(k, v) => {
                if s.set_header(Map::Request, &k, &v) && k == cfg.route_header {
                    // A dynamic module's header change does not re-pick the route by itself.
                    s.clear_route_cache();
                }
            }
            Effect::RemoveRequestHeader(k) => {
                s.remove_header(Map::Request, &k);
            }
            Effect::SetResponseHeader(k, v) => {
                s.set_header(Map::Response, &k, &v);
            }
            Effect::RemoveResponseHeader(k) => {
                s.remove_header(Map::Response, &k);
            }
            Effect::ReplaceResponseBody { replace, with } => s.replace_response_body(replace, &with),
            Effect::ResumeRequest => {
                self.request_paused = false;
                s.continue_request();
            }
            Effect::SendResponse { status, headers, body } => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.answered = true;
                s.send_response(status, &headers, &body, "mcp_warden");
            }
            Effect::Dispatch(call) => {
                let headers: Vec<(&str, &str)> = call.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let body = call.body.as_deref().unwrap_or_default();
                return match s.callout(&call.cluster, &headers, body, call.timeout_ms) {
                    Some(id) => {
                        self.calls.push((id, call.id));
                        None
                    }
                    None => {
                        log::warn!("mcp-warden: cannot call `{}`", call.cluster);
                        Some(call.id)
                    }
                };
            }
            Effect::WakeAt(at) => {
                if self.scheduler.is_none() {
                    self.scheduler = RequestScheduler::new(&s);
                }
                if let Some(sched) = &self.scheduler {
                    timer::wake_at(sched, at, 0);
                }
            }
            Effect::Stat(stat) => s.increment(self.shared.metrics.id(stat).flatten(), 1),
            Effect::Log(level, message) => match level {
                Level::Debug => log::debug!("mcp-warden: {message}"),
                Level::Info => log::info!("mcp-warden: {message}"),
                Level::Warn => log::warn!("mcp-warden: {message}"),
                Level::Error => log::error!("mcp-warden: {message}"),
            },
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Hooks

    pub fn on_request_headers(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        let s = Stream(envoy);
        let headers = s.headers(Map::Request);
        #[cfg(feature = "fault-injection")]
        if headers.iter().any(|(k, _)| k == "x-mcp-warden-test-panic") {
            self.panic_asked = true;
            fault_point(end_of_stream);
        }
        let action = self.run(s, Event::RequestHeaders { headers, end_of_stream });
        self.request_paused = action == flow::Action::Pause;
        if self.request_paused {
            abi::HEADERS_STOP_ITERATION
        } else {
            abi::HEADERS_CONTINUE
        }
    }

    pub fn on_request_body(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        #[cfg(feature = "fault-injection")]
        if self.panic_asked {
            fault_point(end_of_stream);
        }
        if self.poisoned || self.answered {
            return if self.answered { abi::BODY_STOP_NO_BUFFER } else { abi::BODY_CONTINUE };
        }
        let s = Stream(envoy);
        // While paused, Envoy holds the earlier chunks for the filter: the size is everything so far.
        let size = s.request_body_size();
        let env = ProcessEnv::new(&self.shared, s);
        let body = self.flow.wants_request_body(&env, size, end_of_stream).then(|| s.request_body());
        let action = self.run(s, Event::RequestBody { size, body: body.as_deref(), end_of_stream });
        self.request_paused = action == flow::Action::Pause;
        match (self.request_paused, self.answered) {
            (_, true) => abi::BODY_STOP_NO_BUFFER,
            (true, false) => abi::BODY_STOP_AND_BUFFER,
            (false, false) => abi::BODY_CONTINUE,
        }
    }

    pub fn on_request_trailers(&mut self, _envoy: FilterEnvoyPtr) -> u32 {
        abi::TRAILERS_CONTINUE
    }

    pub fn on_response_headers(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        self.responding = true;
        if self.poisoned || !self.flow.guarding() {
            return abi::HEADERS_CONTINUE;
        }
        let s = Stream(envoy);
        // Only the three headers the flow reads (not a copy of every header).
        let (status, content_type, session_id) =
            (s.header(Map::Response, ":status"), s.header(Map::Response, "content-type"), s.header(Map::Response, "mcp-session-id"));
        let status = status.and_then(|v| v.parse().ok()).unwrap_or(0);
        let details = self.flow.needs_reply_details(status).then(|| (s.response_flags(), s.response_code_details()));
        // Envoy's own replies carry details other than `via_upstream`.
        let local_reply = details.as_ref().filter(|(_, d)| d != "via_upstream" && !d.is_empty()).map(|(f, d)| (*f, d.as_str()));
        let head = ResponseHead { status, content_type: content_type.as_deref(), session_id: session_id.as_deref(), local_reply };
        let action = self.run(s, Event::ResponseHeaders { head, end_of_stream });
        self.response_paused = action == flow::Action::Pause;
        if self.response_paused {
            abi::HEADERS_STOP_ITERATION
        } else {
            abi::HEADERS_CONTINUE
        }
    }

    pub fn on_response_body(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        if self.poisoned || !self.flow.guarding() {
            return abi::BODY_CONTINUE;
        }
        let s = Stream(envoy);
        let size = s.response_body_size();
        let body = self.flow.wants_response_body(size, end_of_stream).then(|| s.response_body());
        let action = self.run(s, Event::ResponseBody { size, body: body.as_deref(), end_of_stream });
        self.response_paused = action == flow::Action::Pause;
        if self.response_paused {
            abi::BODY_STOP_AND_BUFFER
        } else {
            abi::BODY_CONTINUE
        }
    }

    pub fn on_stream_complete(&mut self, envoy: FilterEnvoyPtr) {
        if self.poisoned || !self.flow.guarding() {
            return;
        }
        let s = Stream(envoy);
        let flags = s.response_flags();
        self.run(s, Event::Done { flags });
    }

    pub fn on_scheduled(&mut self, envoy: FilterEnvoyPtr, _event: u64) {
        if !self.poisoned {
            self.run(Stream(envoy), Event::Timer);
        }
    }

    pub fn on_callout_done(&mut self, envoy: FilterEnvoyPtr, id: u64, answer: CalloutAnswer) {
        let Some(at) = self.calls.iter().position(|(c, _)| *c == id) else { return };
        let call = self.calls.swap_remove(at).1;
        if self.poisoned {
            return;
        }
        let status = answer.header(":status").and_then(|v| v.parse().ok()).unwrap_or(0);
        log::debug!("mcp-warden: call {call} ended: ok {}, status {status}, {} body bytes", answer.ok, answer.body.len());
        let answer = (answer.ok && status > 0).then_some(CallAnswer { status, headers: &answer.headers, body: &answer.body });
        self.run(Stream(envoy), Event::CallDone { call, answer });
    }

    /// After a panic in a request hook: answer the request with a well-formed JSON-RPC error
    /// (its id when the body was read) unless an answer is already on its way.
    pub fn on_panic(&mut self, envoy: FilterEnvoyPtr, stop: u32) -> u32 {
        self.poisoned = true;
        if self.responding || self.answered {
            return stop;
        }
        self.answered = true;
        let s = Stream(envoy);
        let (status, answer) = panic_answer(&s.request_body());
        let headers = [
            ("content-type", "application/json"),
            ("retry-after", "1"),
            (self.shared.config.served_by_header.as_str(), "none"),
            ("x-mcp-warden-degraded", "internal_error"),
        ];
        s.send_response(status, &headers, &answer, "mcp_warden_internal_error");
        stop
    }
}

#[cfg(feature = "fault-injection")]
fn fault_point(end_of_stream: bool) {
    if end_of_stream {
        #[allow(clippy::panic)]
        {
            panic!("fault injection: a test asked this request to panic");
        }
    }
}

/// The answer to a request whose hook panicked: JSON-RPC "internal error" with the request's
/// id (200), or without an id (503) when the body was not read or is not a single request.
fn panic_answer(body: &[u8]) -> (u16, Vec<u8>) {
    let id = mcp_warden_core::mcp::jsonrpc::parse_request(body, false)
        .ok()
        .filter(|r| !r.batch)
        .and_then(|r| r.entries.into_iter().next())
        .and_then(|e| e.id);
    let status = if id.is_some() { 200 } else { 503 };
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": -32603,
            "message": "mcp-warden: internal error in the sidecar; the request was not forwarded. Retry in 1 s.",
            "data": {"reason": "internal_error", "retry_after": 1}
        }
    });
    (status, answer.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::panic_answer;

    #[test]
    fn a_panic_answer_echoes_the_id_or_says_it_has_none() {
        let (status, body) = panic_answer(br#"{"jsonrpc":"2.0","id":"a7","method":"tools/call","params":{"name":"x"}}"#);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, &v["id"], &v["error"]["code"]), (200, &serde_json::json!("a7"), &serde_json::json!(-32603)));
        for unreadable in [&b""[..], b"not json", br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#] {
            let (status, body) = panic_answer(unreadable);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((status, &v["id"]), (503, &serde_json::Value::Null), "{unreadable:?}");
        }
    }
}
