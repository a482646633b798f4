//! MCP over Streamable HTTP, as far as the sidecar needs it: JSON-RPC messages ([`jsonrpc`]),
//! SSE framing ([`sse`]) and the verdict on an upstream's answer ([`classify`]).

pub mod classify;
pub mod jsonrpc;
pub mod sse;
