//! One agent request through the sidecar: proxy callbacks become events of the core's request
//! flow ([`mcp_warden_core::flow`]), and its effects become host calls. Nothing is decided here.

use crate::env::VmEnv;
use crate::host::{Host, Proxy, REQUEST, REQUEST_BODY, RESPONSE, RESPONSE_BODY};
use crate::shared::Shared;
use mcp_warden_core::flow::{self, CallAnswer, Effect, Event, Flow, Level, ResponseHead};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// Most requests waiting for a timer per VM (past it, new hedges are not armed).
const MAX_TIMERS: usize = 4096;

/// One request's flow and the calls it has under way.
pub struct Stream {
    context_id: u32,
    flow: Flow,
    /// (host token, the flow's call id) of calls made from this request's own callbacks.
    calls: Vec<(u32, u32)>,
}

/// Requests of this VM waiting for a time (hedges) or for a call the root made for them. The
/// root's tick wakes them: proxy-wasm gives HTTP contexts no timer of their own.
#[derive(Default)]
pub struct Waiters {
    timers: RefCell<Vec<(u64, Weak<RefCell<Stream>>)>>,
    root_calls: RefCell<HashMap<u32, Weak<RefCell<Stream>>>>,
}

impl Waiters {
    /// Wakes the requests whose time has come (the root then takes its context back).
    pub fn tick(&self, shared: &Shared, root_context: u32, now_ms: u64) {
        let mut due = Vec::new();
        self.timers.borrow_mut().retain(|(at, w)| {
            if *at <= now_ms {
                due.push(w.clone());
                false
            } else {
                w.strong_count() > 0
            }
        });
        if due.is_empty() {
            return;
        }
        for cell in due.iter().filter_map(Weak::upgrade) {
            let id = cell.try_borrow().map_or(0, |s| s.context_id);
            if Proxy.set_effective_context(id).is_ok() {
                run(shared, self, &cell, Event::Timer, true);
            }
        }
        let _ = Proxy.set_effective_context(root_context);
    }

    /// A call's answer reached the root: true if it was made for a request.
    pub fn call_done(&self, shared: &Shared, root_context: u32, token: u32, num_headers: usize, body_size: usize) -> bool {
        let Some(weak) = self.root_calls.borrow_mut().remove(&token) else { return false };
        if let Some(cell) = weak.upgrade() {
            let id = cell.try_borrow().map_or(0, |s| s.context_id);
            if Proxy.set_effective_context(id).is_ok() {
                call_done(shared, self, &cell, token, num_headers, body_size, true);
            }
            let _ = Proxy.set_effective_context(root_context);
        }
        true
    }
}

/// The HTTP context: the request's stream, shared with the root's timers.
pub struct WardenHttp {
    shared: Rc<Shared>,
    waiters: Rc<Waiters>,
    stream: Rc<RefCell<Stream>>,
}

impl WardenHttp {
    pub fn new(shared: Rc<Shared>, waiters: Rc<Waiters>, context_id: u32) -> Self {
        let stream = Rc::new(RefCell::new(Stream { context_id, flow: Flow::new(), calls: Vec::new() }));
        WardenHttp { shared, waiters, stream }
    }

    fn run(&self, event: Event<'_>) -> Action {
        run(&self.shared, &self.waiters, &self.stream, event, false)
    }
}

/// Hands `event` to the flow and carries out its effects. `from_root`: the root context acts
/// for the request (its timer), so calls it makes come back to the root.
fn run(shared: &Shared, waiters: &Waiters, cell: &Rc<RefCell<Stream>>, event: Event<'_>, from_root: bool) -> Action {
    let Ok(mut stream) = cell.try_borrow_mut() else { return Action::Continue };
    let env = VmEnv::new(shared);
    let now = Proxy.now_ms();
    let mut out = Vec::new();
    let action = stream.flow.on(&env, event, now, &mut out);
    let mut failed = Vec::new();
    while !out.is_empty() {
        for effect in std::mem::take(&mut out) {
            if let Some(call) = execute(shared, waiters, cell, &mut stream, effect, from_root) {
                failed.push(call);
            }
        }
        // A call that could not start is answered at once as failed.
        for call in std::mem::take(&mut failed) {
            stream.flow.on(&env, Event::CallDone { call, answer: None }, now, &mut out);
        }
    }
    match action {
        flow::Action::Continue => Action::Continue,
        flow::Action::Pause => Action::Pause,
    }
}

/// Carries out one effect; returns the id of a call that could not start.
fn execute(shared: &Shared, waiters: &Waiters, cell: &Rc<RefCell<Stream>>, stream: &mut Stream, effect: Effect, from_root: bool) -> Option<u32> {
    let host = Proxy;
    let result = match effect {
        Effect::SetRequestHeader(k, v) => host.set_header(REQUEST, &k, &v),
        Effect::RemoveRequestHeader(k) => host.remove_header(REQUEST, &k),
        Effect::SetResponseHeader(k, v) => host.set_header(RESPONSE, &k, &v),
        Effect::RemoveResponseHeader(k) => host.remove_header(RESPONSE, &k),
        Effect::ReplaceResponseBody { replace, with } => host.replace_body(RESPONSE_BODY, replace, &with),
        Effect::ResumeRequest => host.resume_request(),
        Effect::SendResponse { status, headers, body } => host.send_response(status, &headers, &body),
        Effect::Dispatch(call) => {
            return match host.dispatch(&call.cluster, &call.headers, call.body.as_deref(), call.timeout_ms) {
                Ok(token) if from_root => {
                    waiters.root_calls.borrow_mut().insert(token, Rc::downgrade(cell));
                    stream.calls.push((token, call.id));
                    None
                }
                Ok(token) => {
                    stream.calls.push((token, call.id));
                    None
                }
                Err(e) => {
                    log::warn!("mcp-warden: cannot call `{}`: {e}", call.cluster);
                    Some(call.id)
                }
            };
        }
        Effect::WakeAt(at) => {
            let mut timers = waiters.timers.borrow_mut();
            if timers.len() < MAX_TIMERS {
                timers.push((at, Rc::downgrade(cell)));
            }
            Ok(())
        }
        Effect::Stat(s) => {
            crate::metrics::count(&shared.metrics, s);
            Ok(())
        }
        Effect::Log(level, message) => {
            match level {
                Level::Debug => log::debug!("mcp-warden: {message}"),
                Level::Info => log::info!("mcp-warden: {message}"),
                Level::Warn => log::warn!("mcp-warden: {message}"),
                Level::Error => log::error!("mcp-warden: {message}"),
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        log::debug!("mcp-warden: a host call failed: {e}");
    }
    None
}

/// A call's answer as the host holds it (no headers: the call failed).
fn call_done(shared: &Shared, waiters: &Waiters, cell: &Rc<RefCell<Stream>>, token: u32, num_headers: usize, body_size: usize, from_root: bool) {
    let call = {
        let Ok(mut s) = cell.try_borrow_mut() else { return };
        let Some(at) = s.calls.iter().position(|(t, _)| *t == token) else { return };
        s.calls.swap_remove(at).1
    };
    let headers = if num_headers > 0 { Proxy.headers(MapType::HttpCallResponseHeaders) } else { Vec::new() };
    let status = headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let body = if status > 0 { Proxy.body(BufferType::HttpCallResponseBody, body_size).unwrap_or_default() } else { Vec::new() };
    let answer = (status > 0).then_some(CallAnswer { status, headers: &headers, body: &body });
    run(shared, waiters, cell, Event::CallDone { call, answer }, from_root);
}

impl Context for WardenHttp {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        call_done(&self.shared, &self.waiters, &self.stream, token, num_headers, body_size, false);
    }
}

impl HttpContext for WardenHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = Proxy.headers(REQUEST);
        #[cfg(feature = "fault-injection")]
        if headers.iter().any(|(k, _)| k == "x-mcp-warden-test-panic") {
            panic!("fault injection: a test asked this VM to panic");
        }
        self.run(Event::RequestHeaders { headers, end_of_stream })
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let wants = self.stream.try_borrow().is_ok_and(|s| s.flow.wants_request_body(&VmEnv::new(&self.shared), size, end_of_stream));
        let body = if wants { Proxy.body(REQUEST_BODY, size).ok() } else { None };
        self.run(Event::RequestBody { size, body: body.as_deref(), end_of_stream })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !self.stream.try_borrow().is_ok_and(|s| s.flow.guarding()) {
            return Action::Continue;
        }
        let headers = Proxy.headers(RESPONSE);
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let status = get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let details = self.stream.try_borrow().is_ok_and(|s| s.flow.needs_reply_details(status)).then(|| Proxy.reply_details());
        // Envoy's own replies carry details other than `via_upstream`.
        let local_reply = details.as_ref().filter(|(_, d)| d != "via_upstream" && !d.is_empty()).map(|(f, d)| (*f, d.as_str()));
        let head = ResponseHead { status, content_type: get("content-type"), session_id: get("mcp-session-id"), local_reply };
        self.run(Event::ResponseHeaders { head, end_of_stream })
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let wants = self.stream.try_borrow().is_ok_and(|s| s.flow.wants_response_body(size, end_of_stream));
        let body = if wants { Proxy.body(RESPONSE_BODY, size).ok() } else { None };
        self.run(Event::ResponseBody { size, body: body.as_deref(), end_of_stream })
    }

    fn on_log(&mut self) {
        if self.stream.try_borrow().is_ok_and(|s| s.flow.guarding()) {
            let flags = Proxy.response_flags();
            self.run(Event::Done { flags });
        }
    }
}
