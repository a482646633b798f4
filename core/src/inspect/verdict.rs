//! Verdicts the trust aggregator publishes by definition fingerprint (it analyses each unique
//! definition of the mesh once): a listed tool with one gets a finding at the verdict's severity
//! and is stripped at least, whatever the local policy says (as a quarantine is enforced); a
//! policy stricter for that severity (block, quarantine) applies.

use super::fingerprint::Fingerprint;
use crate::severity::Severity;
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

/// A definition as sent for the mesh-wide scan: every string value with key-like runs replaced
/// by `[redacted]` (as finding evidence is), and whether anything was.
pub fn redact_definition(v: &serde_json::Value) -> (serde_json::Value, bool) {
    use serde_json::Value;
    fn walk(v: &Value, changed: &mut bool, depth: usize) -> Value {
        match v {
            Value::String(s) => {
                let r = super::text::redact(s);
                *changed |= r != *s;
                Value::String(r)
            }
            // Past the depth the detector reads, nothing is sent.
            _ if depth > 32 => Value::Null,
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, changed, depth + 1)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), walk(x, changed, depth + 1))).collect()),
            other => other.clone(),
        }
    }
    let mut changed = false;
    let out = walk(v, &mut changed, 0);
    (out, changed)
}
