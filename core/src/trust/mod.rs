//! Dynamic trust: a score in [0, 1] per MCP server, computed from performance, security signals
//! and ratings, with an explained breakdown. Shared by the aggregator (which computes scores) and
//! the filter (which reports signals and enforces scores and quarantine).
//!
//! [`model`] is the arithmetic (see `docs/TRUST.md` for the formula and why), [`wire`] the JSON
//! documents sidecars, raters, scanners and operators exchange with the aggregator.

pub mod model;
pub mod sidecar;
pub mod wire;

pub use model::{Evidence, ReputationInput, SecurityState, TrustParams, TrustScore};
