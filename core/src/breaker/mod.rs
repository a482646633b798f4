//! The circuit breaker: one per upstream cluster, its state kept in host shared data so that every
//! worker thread sees the same breaker.
//!
//! [`policy`] holds the validated parameters, [`window`] the sliding window of recent calls,
//! [`machine`] the state machine (time passed in), [`codec`] the byte layout kept in shared data
//! and [`store`] the compare-and-swap loop over any [`SharedStore`].

pub mod codec;
pub mod machine;
pub mod policy;
pub mod store;
pub mod window;

pub use machine::{Admission, BreakerState, CallRecord, Phase, Transition, TransitionReason};
pub use policy::{BreakerPolicy, InvalidPolicy, WindowKind};
pub use store::{BreakerStore, SharedStore, StoreError};
