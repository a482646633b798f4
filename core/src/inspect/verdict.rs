//! Verdicts the trust aggregator publishes by definition fingerprint (it analyses each unique
//! definition of the mesh once): a listed tool with one is judged as if this sidecar had found
//! it, at the verdict's severity, under this sidecar's own policy.

use super::fingerprint::Fingerprint;
use crate::trust::wire::Severity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The aggregator's finding on one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshVerdict {
    pub severity: Severity,
    /// The rules behind it, comma-separated (bounded by the sender).
    pub rules: String,
}

/// Verdicts by fingerprint (bounded by whoever builds it: `TrustTable::from_document`).
pub type MeshVerdicts = BTreeMap<Fingerprint, MeshVerdict>;

/// The rule of the finding a verdict becomes.
pub const MESH_RULE: &str = "mesh/verdict";
