//! One agent request through the sidecar, as a sans-IO state machine.
//!
//! The host turns each proxy callback into an [`Event`], hands it to [`Flow::on`] with the time,
//! and carries out the [`Effect`]s it gets back, in order; shared state (breakers, sessions, tool
//! hints, trust, inspection memory) is reached through [`Env`]. Nothing here calls a host, so
//! every path is a unit test with a fake host and a fake clock (`tests.rs`).
//!
//! Reading order: [`io`] (events and effects), [`env`] (shared state), [`request`] (what the
//! agent sent), [`attempt`] (one upstream call), [`answer`] (degraded answers), [`inspection`]
//! (what both hosts do around the inspector), [`machine`] (the flow: routing, holds, retries and
//! hedges, session moves, inspection), [`stats`] (the stats it counts and their names). The retry
//! policy (which calls are safe to repeat, the budget, hold deadlines) is [`crate::retry`].

pub mod answer;
pub mod attempt;
pub mod env;
pub mod inspection;
pub mod io;
pub mod machine;
pub mod request;
pub mod stats;

#[cfg(test)]
mod tests;

pub use env::{Env, TemplateKey};
pub use io::{Action, Call, CallAnswer, ClusterStat, Decision, Effect, Event, Level, ResponseHead, ServerStat, Stat};
pub use machine::Flow;
