//! The sidecar's conversation with the trust aggregator, driven by `on_tick` in every VM.
//!
//! Every VM: merges its in-memory outcome counts into shared data. Every request checks the
//! shared table's version key (one small read, [`refresh`]) and reloads the table when it moved,
//! so a quarantine applies on every worker as soon as the sidecar has it. The one VM holding the lease (see
//! `mcp_warden_core::trust::sidecar::Lease`): polls `GET /v1/scores` (with `If-None-Match`) and
//! publishes the table, and reports the merged counts with `POST /v1/signals`, resending the
//! same batch (same `batch_id`) until the aggregator acknowledges it, and the tool definitions
//! the VMs had not seen with `POST /v1/definitions` (the mesh-wide scan). Nothing here runs on a
//! request's path: a slow or absent aggregator only means an older table.

use crate::host::{self, HostStore};
use crate::shared_json;
use crate::shared::Shared;
use mcp_warden_core::breaker::store::CREATE_ONLY;
use mcp_warden_core::breaker::{SharedStore, StoreError};
use mcp_warden_core::config::{Cluster, TrustConfig};
use mcp_warden_core::trust::sidecar::{DefinitionOutbox, Lease, SignalAccumulator, TrustTable};
use mcp_warden_core::trust::wire::{DefinitionBatch, ScoresDocument, SubmittedDefinition};
use proxy_wasm::types::{BufferType, MapType};
use std::collections::HashMap;
use std::time::Duration;

const PENDING_KEY: &str = "mcp_warden.trust.pending";
const INFLIGHT_KEY: &str = "mcp_warden.trust.inflight";
const TABLE_KEY: &str = "mcp_warden.trust.table";
/// Rewritten after every table write: its compare-and-swap version tells readers the table moved.
const TABLE_VERSION_KEY: &str = "mcp_warden.trust.table_version";
const LEASE_KEY: &str = "mcp_warden.trust.lease";
/// Definitions every VM queued for the mesh-wide scan, sent by the lease holder.
const DEFINITIONS_KEY: &str = "mcp_warden.trust.definitions";
/// After an aggregator without the mesh-wide scan answered 404: try again this much later.
const DEFINITIONS_BACKOFF_MS: u64 = 600_000;

/// Most bytes read from an aggregator answer.
const MAX_ANSWER_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Poll,
    /// The batch sent, to clear `INFLIGHT` on acknowledgement only while it still holds it.
    Report(Vec<u8>),
    /// Definitions sent for the mesh-wide scan: queued again if the call fails.
    Definitions(Vec<SubmittedDefinition>),
}

/// Per-VM state of the trust loop.
#[derive(Debug, Default)]
pub struct TrustLoop {
    owner: u64,
    last_poll_ms: u64,
    last_report_ms: u64,
    calls: HashMap<u32, Call>,
    failing_since_ms: Option<u64>,
    last_definitions_ms: u64,
    /// No definitions are sent before this time (an older aggregator).
    definitions_after_ms: u64,
}

/// How often every VM ticks for a given trust configuration.
pub fn tick_period(t: &TrustConfig) -> Duration {
    Duration::from_millis((t.poll_interval_ms.min(t.report_interval_ms) / 4).clamp(50, 1000))
}

impl TrustLoop {
    pub fn new(owner: u64) -> Self {
        TrustLoop { owner, ..Default::default() }
    }

    /// One tick: flush, refresh, and (for the lease holder) poll and report.
    pub fn tick(&mut self, shared: &Shared, t: &TrustConfig, now: u64) {
        self.flush(shared);
        refresh(shared);
        let ttl = 3 * tick_period(t).as_millis() as u64 + 200;
        if !self.hold_lease(now, ttl) {
            return;
        }
        if now.saturating_sub(self.last_poll_ms) >= t.poll_interval_ms && !self.busy(|c| *c == Call::Poll) {
            self.last_poll_ms = now;
            self.poll(shared, t);
        }
        if now.saturating_sub(self.last_report_ms) >= t.report_interval_ms
            && !self.busy(|c| matches!(c, Call::Report(_)))
        {
            self.last_report_ms = now;
            self.report(t, &shared.config.clusters, now);
        }
        if now.saturating_sub(self.last_definitions_ms) >= t.report_interval_ms
            && now >= self.definitions_after_ms
            && !self.busy(|c| matches!(c, Call::Definitions(_)))
        {
            self.last_definitions_ms = now;
            self.send_definitions(t);
        }
    }

    /// Sends what every VM queued for the mesh-wide scan.
    fn send_definitions(&mut self, t: &TrustConfig) {
        let mut taken = Vec::new();
        if let Err(e) = shared_json::update::<DefinitionOutbox>(DEFINITIONS_KEY, |o| taken = o.take()) {
            log::debug!("mcp-warden: definitions not taken this period: {e}");
            return;
        }
        if taken.is_empty() {
            return;
        }
        let body = match serde_json::to_vec(&DefinitionBatch { definitions: taken.clone() }) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("mcp-warden: cannot encode definitions: {e}");
                return;
            }
        };
        let auth = format!("Bearer {}", t.token);
        let headers = vec![
            (":method", "POST"),
            (":path", "/v1/definitions"),
            (":authority", t.aggregator_authority.as_str()),
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        self.dispatch(t, headers, Some(&body), Call::Definitions(taken));
    }

    fn busy(&self, kind: impl Fn(&Call) -> bool) -> bool {
        self.calls.values().any(kind)
    }

    /// Merges this VM's counts (and queued definitions) into shared data.
    fn flush(&self, shared: &Shared) {
        if !shared.outbox.borrow().is_empty() {
            let local = shared.outbox.borrow_mut().take();
            if let Err(e) = shared_json::update::<DefinitionOutbox>(DEFINITIONS_KEY, |o| o.requeue(local.clone())) {
                log::debug!("mcp-warden: definitions kept for the next tick: {e}");
                shared.outbox.borrow_mut().requeue(local);
            }
        }
        if shared.pending.borrow().is_empty() {
            return;
        }
        let local = shared.pending.borrow().clone();
        let merged = shared_json::update::<SignalAccumulator>(PENDING_KEY, |acc| acc.merge(&local));
        match merged {
            Ok(()) => *shared.pending.borrow_mut() = SignalAccumulator::default(),
            Err(e) => log::debug!("mcp-warden: trust counts kept for the next tick: {e}"),
        }
    }

    fn hold_lease(&self, now: u64, ttl: u64) -> bool {
        let Ok((current, cas)) = HostStore.get(LEASE_KEY) else { return false };
        match Lease::claim(current.as_deref(), self.owner, now, ttl) {
            Some(lease) => HostStore.set(LEASE_KEY, &lease.encode(), cas.or(Some(CREATE_ONLY))).is_ok(),
            None => false,
        }
    }

    fn poll(&mut self, shared: &Shared, t: &TrustConfig) {
        let etag = format!("\"{}\"", shared.trust.borrow().version);
        let auth = format!("Bearer {}", t.token);
        let headers = vec![
            (":method", "GET"),
            (":path", "/v1/scores"),
            (":authority", t.aggregator_authority.as_str()),
            ("authorization", auth.as_str()),
            ("if-none-match", etag.as_str()),
        ];
        self.dispatch(t, headers, None, Call::Poll);
    }

    fn report(&mut self, t: &TrustConfig, clusters: &[Cluster], now: u64) {
        let batch = match take_batch(t, clusters, self.owner, now) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                log::debug!("mcp-warden: no trust report this period: {e}");
                return;
            }
        };
        let auth = format!("Bearer {}", t.token);
        let headers = vec![
            (":method", "POST"),
            (":path", "/v1/signals"),
            (":authority", t.aggregator_authority.as_str()),
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        self.dispatch(t, headers, Some(&batch), Call::Report(batch.clone()));
    }

    fn dispatch(&mut self, t: &TrustConfig, headers: Vec<(&str, &str)>, body: Option<&[u8]>, kind: Call) {
        let headers: Vec<(String, String)> = headers.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match host::dispatch(&t.aggregator_cluster, &headers, body, t.timeout_ms) {
            Ok(token) => {
                self.calls.insert(token, kind);
            }
            Err(e) => log::warn!("mcp-warden: cannot call the aggregator on `{}`: {e:?}", t.aggregator_cluster),
        }
    }

    /// The aggregator answered (or the call failed: no headers).
    pub fn on_response(&mut self, shared: &Shared, token: u32, body_size: usize, now: u64) {
        let Some(kind) = self.calls.remove(&token) else { return };
        let status: u16 = host::header(MapType::HttpCallResponseHeaders, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ok = match (kind, status) {
            (Call::Poll, 200) => {
                let body = host::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(MAX_ANSWER_BYTES))
                    .unwrap_or_default();
                match json_str::<ScoresDocument>(&body) {
                    Ok(doc) => {
                        self.publish(shared, &TrustTable::from_document(&doc));
                        true
                    }
                    Err(e) => {
                        log::warn!("mcp-warden: unreadable scores from the aggregator: {e}");
                        false
                    }
                }
            }
            (Call::Poll, 304) => true,
            (Call::Report(batch), 200..=299) => {
                clear_inflight(&batch);
                true
            }
            (Call::Definitions(_), 200..=299) => true,
            (Call::Definitions(_), 404) => {
                // An aggregator without the mesh-wide scan: the sidecar's own inspection stands.
                log::info!("mcp-warden: the aggregator does not take definitions (404); not sending any for 10 minutes");
                self.definitions_after_ms = now + DEFINITIONS_BACKOFF_MS;
                true
            }
            (Call::Definitions(_), 400 | 401 | 403 | 413) => {
                log::error!("mcp-warden: the aggregator refused definitions ({status}); dropped");
                false
            }
            (Call::Definitions(defs), _) => {
                if let Err(e) = shared_json::update::<DefinitionOutbox>(DEFINITIONS_KEY, |o| o.requeue(defs.clone())) {
                    log::debug!("mcp-warden: definitions dropped after a failed send: {e}");
                }
                false
            }
            (Call::Report(batch), 400 | 401 | 403 | 413) => {
                // It will never be accepted: drop it rather than resend it forever.
                log::error!("mcp-warden: the aggregator refused a trust report ({status}); dropped");
                clear_inflight(&batch);
                false
            }
            _ => false,
        };
        match (ok, self.failing_since_ms) {
            (true, Some(_)) => {
                log::info!("mcp-warden: the trust aggregator answers again");
                self.failing_since_ms = None;
            }
            (false, None) => {
                log::warn!("mcp-warden: trust aggregator call failed (status {status}); keeping the last known table");
                self.failing_since_ms = Some(now);
            }
            _ => {}
        }
    }

    fn publish(&mut self, shared: &Shared, table: &TrustTable) {
        match serde_json::to_vec(table) {
            Ok(bytes) => {
                if HostStore.set(TABLE_KEY, &bytes, None).is_ok() {
                    *shared.trust.borrow_mut() = table.clone();
                    // After the table: a reader that sees the new version reads the new table.
                    let _ = HostStore.set(TABLE_VERSION_KEY, &table.version.to_le_bytes(), None);
                }
            }
            Err(e) => log::warn!("mcp-warden: cannot store the trust table: {e}"),
        }
    }
}

/// Reloads the VM's trust table when the shared copy's version key moved: one small read.
pub fn refresh(shared: &Shared) {
    let Ok((Some(_), cas)) = HostStore.get(TABLE_VERSION_KEY) else { return };
    if cas.is_none() || cas == shared.trust_seen.get() {
        return;
    }
    let Ok((Some(bytes), _)) = HostStore.get(TABLE_KEY) else { return };
    match json_str::<TrustTable>(&bytes) {
        Ok(table) => {
            *shared.trust.borrow_mut() = table;
            shared.trust_seen.set(cas);
        }
        Err(e) => log::warn!("mcp-warden: unreadable trust table in shared data: {e}"),
    }
}

/// Creates the shared keys this loop changes with compare-and-swap. Called at configuration,
/// before any traffic: proxy-wasm has no "create if absent", and two first writes racing on an
/// absent key would both succeed, the later one erasing the other's counts.
pub fn prepare_shared_keys() {
    for key in [PENDING_KEY, INFLIGHT_KEY, LEASE_KEY, DEFINITIONS_KEY] {
        if let Ok((None, _)) = HostStore.get(key) {
            let _ = HostStore.set(key, b"", None);
        }
    }
}

/// Forgets the unacknowledged batch once acknowledged (or refused for good), unless another
/// VM's report already replaced it: a late answer must not erase a newer batch.
fn clear_inflight(sent: &[u8]) {
    if let Ok((Some(current), cas)) = HostStore.get(INFLIGHT_KEY) {
        if current == sent {
            let _ = HostStore.set(INFLIGHT_KEY, b"", cas);
        }
    }
}

/// The batch to send: the unacknowledged one, or the pending counts turned into a new batch.
fn take_batch(t: &TrustConfig, clusters: &[Cluster], owner: u64, now: u64) -> Result<Option<Vec<u8>>, StoreError> {
    if let (Some(inflight), _) = HostStore.get(INFLIGHT_KEY)? {
        if !inflight.is_empty() {
            return Ok(Some(inflight));
        }
    }
    let mut taken = None;
    let batch_id = format!("{}-{owner:x}-{now}", t.sidecar);
    // Retried on a compare-and-swap conflict: each try takes from the value it read.
    shared_json::update::<SignalAccumulator>(PENDING_KEY, |acc| {
        let names = clusters.iter().map(|c| c.name.as_str());
        taken = acc.take_batch(names, &t.sidecar, batch_id.clone(), t.report_interval_ms)
    })?;
    let Some(batch) = taken else { return Ok(None) };
    let bytes = serde_json::to_vec(&batch).map_err(|e| StoreError::Host(e.to_string()))?;
    HostStore.set(INFLIGHT_KEY, &bytes, None)?;
    Ok(Some(bytes))
}

/// JSON from bytes through the `&str` reader (one copy of serde_json's parser in the binary).
fn json_str<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let text = std::str::from_utf8(bytes).map_err(<serde_json::Error as serde::de::Error>::custom)?;
    serde_json::from_str(text)
}
