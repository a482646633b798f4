//! mcp-warden as an Envoy dynamic module (a native `.so`), over the same core as the wasm filter.
//!
//! Reading order: [`abi`] (the hand-written ABI: hooks in, callbacks out, panics caught),
//! [`host`] (the only caller of Envoy), [`config`] (one filter configuration), [`filter`] (one
//! request), [`state`] (what all worker threads share), [`metrics`], [`trust`].

pub mod abi;
pub mod config;
pub mod filter;
pub mod host;
pub mod metrics;
pub mod state;
pub mod trust;
