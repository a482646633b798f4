//! What goes in and out of a [`super::Flow`]: events from the host, effects for it to carry out.

use crate::outcome::FailureKind;
use std::borrow::Cow;

/// What the host tells the proxy about the stream after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Stop iteration: the host buffers until the flow resumes, answers or replaces.
    Pause,
}

/// One thing that happened to the request, as the host saw it. Header names are lower case.
#[derive(Debug)]
pub enum Event<'a> {
    /// Every request header, moved in (the flow keeps what it needs, e.g. to resend the call).
    RequestHeaders { headers: Vec<(String, String)>, end_of_stream: bool },
    /// The request body: all of it so far while the flow pauses, else the latest chunk.
    /// `body` is `None` when [`super::Flow::wants_request_body`] said it is not needed.
    RequestBody { size: usize, body: Option<&'a [u8]>, end_of_stream: bool },
    ResponseHeaders { head: ResponseHead<'a>, end_of_stream: bool },
    /// Like `RequestBody`, for the answer ([`super::Flow::wants_response_body`]).
    ResponseBody { size: usize, body: Option<&'a [u8]>, end_of_stream: bool },
    /// A call the flow dispatched ended: its answer, or `None` if it failed or never started.
    CallDone { call: u32, answer: Option<CallAnswer<'a>> },
    /// A time the flow asked for ([`Effect::WakeAt`]) has come.
    Timer,
    /// The exchange is over (access-log time), with Envoy's response flags.
    Done { flags: u64 },
}

/// The answer's headers as the flow needs them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub session_id: Option<&'a str>,
    /// When Envoy answered itself (see [`super::Flow::needs_reply_details`]): flags and details.
    pub local_reply: Option<(u64, &'a str)>,
}

/// The answer to a dispatched call.
#[derive(Debug, Clone, Copy)]
pub struct CallAnswer<'a> {
    pub status: u16,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl<'a> CallAnswer<'a> {
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A call the flow makes itself (a retry, a hedge, a session opening, a session end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The flow's own id for it: the host reports its end as [`Event::CallDone`] with this id.
    pub id: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

/// What the host must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SetRequestHeader(Cow<'static, str>, String),
    RemoveRequestHeader(Cow<'static, str>),
    SetResponseHeader(Cow<'static, str>, String),
    RemoveResponseHeader(Cow<'static, str>),
    /// Replace the first `replace` bytes of the response body (what the host holds) with `with`.
    ReplaceResponseBody { replace: usize, with: Vec<u8> },
    /// Let the paused request go on to the router.
    ResumeRequest,
    /// Answer the agent from the sidecar (a local reply).
    SendResponse { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Make a call; a call that cannot start is reported at once as a failed [`Event::CallDone`].
    Dispatch(Call),
    /// Deliver [`Event::Timer`] at (or soon after) this time, in ms.
    WakeAt(u64),
    Stat(Stat),
    Log(Level, String),
}

/// Log levels the flow uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A counter to add one to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Cluster(usize, ClusterStat),
    Server(usize, ServerStat),
}

/// Per-cluster counters (`mcp_warden.cluster.<cluster>.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterStat {
    Requests,
    Success,
    Slow,
    Fallback,
    Rejected,
    Untrusted,
    Retried,
    Hedged,
    SessionMoved,
    Failure(FailureKind),
    SecurityStripped,
    SecurityBlocked,
}

/// Per-server counters (`mcp_warden.server.<server>.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStat {
    Requests,
    Degraded,
}

/// What the agent gets instead of a held list answer, as decided by inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The answer as the server sent it.
    Forward,
    /// The answer without the offending items (framed like the original).
    Replace(Vec<u8>),
    /// A degraded answer, naming these rules.
    Block { rules: String, quarantine: bool },
}
