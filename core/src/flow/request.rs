//! What the flow knows of the agent's request: its headers (kept to send it again), its body
//! (bounded) and what they say (JSON-RPC method, tool, ids, session, protocol generation).

use crate::degrade::is_modern_protocol;
use crate::mcp::classify::HttpMethod;
use crate::mcp::jsonrpc::{parse_request, ParsedRequest};

/// The agent's request.
#[derive(Debug)]
pub struct Request {
    pub server: usize,
    pub method: HttpMethod,
    /// A DELETE (ends the agent's session).
    pub deleting: bool,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
    pub modern_protocol: bool,
    /// The agent's `Mcp-Session-Id`.
    pub session: Option<String>,
    /// Larger than `request_max_bytes`: streamed on, never read.
    pub too_big: bool,
    /// Every header as the agent sent it (to send the call again).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub parsed: Option<ParsedRequest>,
}

impl Request {
    /// From the request headers of a request routed to `server`.
    pub fn new(server: usize, headers: Vec<(String, String)>, request_max_bytes: usize) -> Self {
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let verb = get(":method");
        let method = if verb.as_deref() == Some("POST") { HttpMethod::Post } else { HttpMethod::Other };
        Request {
            server,
            method,
            deleting: verb.as_deref() == Some("DELETE"),
            // A body known to exceed the bound is never held (Envoy would answer 413 past its own
            // buffer limit); it streams on, judged without ids.
            too_big: get("content-length")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .is_some_and(|n| n > request_max_bytes),
            session: get("mcp-session-id"),
            mcp_method: get("mcp-method"),
            mcp_name: get("mcp-name"),
            modern_protocol: is_modern_protocol(get("mcp-protocol-version").as_deref()),
            headers,
            body: Vec::new(),
            parsed: None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A POST whose body the flow reads.
    pub fn readable(&self) -> bool {
        self.method == HttpMethod::Post && !self.too_big
    }

    /// Keeps the complete body and parses it. An unreadable body is the agent's mistake; the
    /// server will say so, and its ids stay unknown.
    pub fn keep_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
        self.parse();
    }

    pub fn parse(&mut self) {
        if self.readable() {
            self.parsed = parse_request(&self.body, self.mcp_method.is_some()).ok();
        }
    }

    /// The JSON-RPC method of a single request (header first, then body).
    pub fn method_name(&self) -> Option<&str> {
        self.mcp_method.as_deref().or_else(|| self.parsed.as_ref()?.entries.first()?.method.as_deref())
    }

    pub fn is_method(&self, method: &str) -> bool {
        self.method_name() == Some(method)
    }

    /// Not a batch (a batch, or an unread body, is never inspected whole).
    pub fn single(&self) -> bool {
        self.parsed.as_ref().is_none_or(|r| !r.batch)
    }

    /// The tool a single `tools/call` calls.
    pub fn tool(&self) -> Option<&str> {
        self.mcp_name.as_deref().or_else(|| self.parsed.as_ref()?.entries.first()?.name.as_deref())
    }
}
