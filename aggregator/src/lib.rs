//! The trust aggregator of mcp-warden: sidecars report what they saw of each MCP server,
//! raters and scanners add opinions and findings, operators decide; the aggregator keeps it all
//! in SQLite, computes each server's trust score with the core's model
//! ([`mcp_warden_core::trust`]), and publishes a scores document sidecars poll with an ETag.
//!
//! Reading order: [`http`] (the API), [`engine`] (what each write does, in one transaction),
//! [`state`] and [`store`] (memory and disk), then [`auth`], [`config`], [`validate`].
//! [`ctl`] is the operator CLI.

pub mod auth;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod engine;
pub mod error;
pub mod http;
pub mod service;
pub mod state;
pub mod store;
pub mod validate;
pub mod views;

pub use auth::{Principal, Role, Tokens};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Settings;
pub use error::ApiError;
pub use service::Service;
