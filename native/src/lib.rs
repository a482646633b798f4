//! mcp-warden as an Envoy dynamic module (a native `.so`), over the same core as the wasm filter.
//!
//! Reading order: [`abi`] (the hand-written ABI), [`hooks`] (what Envoy calls, panics caught),
//! [`host`] (the only caller of Envoy), [`config`] (one filter configuration), [`filter`] (one
//! request: hooks to the core's flow events, its effects to Envoy), [`env`] (the flow's shared
//! state in process memory, see [`state`]), [`inspect`], [`metrics`], [`timer`], [`trust`].

pub mod abi;
pub mod config;
pub mod env;
pub mod filter;
pub mod hooks;
pub mod host;
pub mod inspect;
pub mod metrics;
pub mod state;
pub mod timer;
pub mod trust;
