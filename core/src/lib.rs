//! Pure logic of mcp-warden, shared by the proxy-wasm filter and the aggregator.
//!
//! Nothing here calls a host: time is passed in as milliseconds, shared state goes through the
//! [`breaker::SharedStore`] trait, and every function is tested on the host and inside wasm.
//!
//! Reading order: [`config`] (what an operator writes), [`routing`] (which logical server a
//! request is for), [`breaker`] (the per-cluster state machine), [`mcp`] (JSON-RPC and SSE
//! parsing, response classification), [`degrade`] (what the agent gets when nothing is healthy),
//! [`inspect`] (security signals: tool poisoning, rug pulls, shadowing, protocol violations).

pub mod breaker;
pub mod config;
pub mod degrade;
pub mod flow;
pub mod inspect;
pub mod mcp;
pub mod outcome;
pub mod reader;
pub mod retry;
pub mod routing;
pub mod session;
pub mod severity;
pub mod trust;

pub use config::{ConfigError, PluginConfig};
pub use outcome::{FailureKind, Outcome};
