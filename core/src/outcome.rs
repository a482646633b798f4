//! What one upstream call amounted to, as the breaker and the stats see it.

/// Why a call counts against a cluster's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// TCP connect refused or failed, no healthy host, overflow (Envoy flags UF, UH, UO).
    ConnectFailure,
    /// The upstream reset or closed the stream (Envoy flags UR, UC, LR, UPE).
    Reset,
    /// The route or stream timed out (Envoy flags UT, SI, DT).
    Timeout,
    /// The upstream answered 5xx itself.
    Http5xx,
    /// The upstream answered 429 (counted only when configured).
    Http429,
    /// A JSON-RPC error that is the server's fault (e.g. -32603).
    JsonRpcError,
    /// The body is not JSON, not JSON-RPC 2.0, has the wrong id, or an SSE frame does not parse.
    Malformed,
    /// The route header named a cluster Envoy does not know: a configuration error.
    UnknownCluster,
    /// A tool result with `isError: true` (counted only when configured).
    ToolError,
}

impl FailureKind {
    /// Every kind, in a fixed order (stats are defined once per kind).
    pub const ALL: [FailureKind; 9] = [
        FailureKind::ConnectFailure,
        FailureKind::Reset,
        FailureKind::Timeout,
        FailureKind::Http5xx,
        FailureKind::Http429,
        FailureKind::JsonRpcError,
        FailureKind::Malformed,
        FailureKind::UnknownCluster,
        FailureKind::ToolError,
    ];

    /// Stable snake_case name used in stats, logs and degraded answers.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ConnectFailure => "connect_failure",
            FailureKind::Reset => "reset",
            FailureKind::Timeout => "timeout",
            FailureKind::Http5xx => "http_5xx",
            FailureKind::Http429 => "http_429",
            FailureKind::JsonRpcError => "jsonrpc_error",
            FailureKind::Malformed => "malformed",
            FailureKind::UnknownCluster => "unknown_cluster",
            FailureKind::ToolError => "tool_error",
        }
    }

    /// Position in [`FailureKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short human phrase for degraded answers.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::ConnectFailure => "the server refused or dropped the connection",
            FailureKind::Reset => "the server reset the stream",
            FailureKind::Timeout => "the server did not answer in time",
            FailureKind::Http5xx => "the server answered with an HTTP 5xx error",
            FailureKind::Http429 => "the server is rate limiting",
            FailureKind::JsonRpcError => "the server reported an internal error",
            FailureKind::Malformed => "the server sent a malformed answer",
            FailureKind::UnknownCluster => "the sidecar has no route to the server",
            FailureKind::ToolError => "the server's tools keep failing",
        }
    }
}

/// The verdict on one call, before latency is taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server did its job (including answering an agent's mistake with -32602, a 404 for an
    /// unknown session, or a tool result with `isError: true` by default).
    Success,
    /// The server failed.
    Failure(FailureKind),
    /// Nothing can be said (the agent went away, a stream ended before the answer on purpose).
    Unknown,
}
