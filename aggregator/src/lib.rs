//! The trust aggregator of mcp-warden: sidecars report what they saw of each MCP server,
//! raters and scanners add opinions and findings, operators decide; the aggregator keeps it all
//! in SQLite (one process) or PostgreSQL (any number of replicas), computes each server's trust
//! score with the core's model ([`mcp_warden_core::trust`]), and publishes a scores document
//! sidecars poll with an ETag.
//!
//! Reading order: [`http`] (the API), [`engine`] (what each write does, in one transaction),
//! [`admission`] (which servers are tracked), [`state`] and [`db`] (memory and the database; [`store`] is SQLite's SQL, [`pg`]
//! PostgreSQL's), then [`auth`], [`config`], [`validate`].
//! [`ctl`] is the operator CLI; [`dashboard`] serves the trust dashboard and [`metrics`] the
//! Prometheus metrics. [`guard`] (rate limits, request cap, deadlines) and [`serve`] (the
//! accept loop) protect the service; [`audit`] is the audit log's hash chain and [`backup`]
//! checks and restores backups.

pub mod access;
pub mod admin;
pub mod admission;
pub mod anchor;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod dashboard;
pub mod db;
pub mod db_error;
pub mod engine;
pub mod error;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod pg;
pub mod pg_tls;
pub mod ratelimit;
pub mod scan;
pub mod scrape;
pub mod serve;
pub mod service;
pub mod state;
pub mod store;
pub mod text;
pub mod validate;
pub mod views;

pub use auth::{Principal, Role, Tokens};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Settings;
pub use db::Location;
pub use error::ApiError;
pub use service::Service;
