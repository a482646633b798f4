//! The trust loop of one filter configuration: a module thread ticks Envoy's main-thread
//! scheduler; each tick polls the aggregator's scores and reports this process's outcome counts
//! (and the tool definitions it had not seen, for the mesh-wide scan) through Envoy callouts (the
//! same wire documents as the wasm filter, see `mcp_warden_core::trust`). One process is one reporter: no lease is needed, unlike the
//! wasm filter's VMs. Nothing here runs on a request's path.

use crate::host::{CalloutAnswer, ConfigHost, ConfigScheduler};
use crate::state::{self, lock};
use mcp_warden_core::config::{Cluster, TrustConfig};
use mcp_warden_core::trust::sidecar::{SignalAccumulator, TrustTable};
use mcp_warden_core::trust::wire::{DefinitionBatch, ScoresDocument, SubmittedDefinition};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Poll,
    Report,
    /// Definitions sent for the mesh-wide scan: queued again if the call fails.
    Definitions(Vec<SubmittedDefinition>),
}

/// After an aggregator without the mesh-wide scan answered 404: try again this much later.
const DEFINITIONS_BACKOFF_MS: u64 = 600_000;

/// What the loop remembers between ticks (main thread only, behind a lock for `Sync`).
#[derive(Debug, Default)]
struct LoopState {
    last_poll_ms: u64,
    last_report_ms: u64,
    calls: HashMap<u64, Call>,
    /// The batch sent and not yet acknowledged: sent again, same `batch_id`, until it is.
    inflight: Option<Vec<u8>>,
    failing_since_ms: Option<u64>,
    last_definitions_ms: u64,
    /// No definitions are sent before this time (an older aggregator).
    definitions_after_ms: u64,
}

/// The running loop; dropping it stops the thread.
pub struct TrustLoop {
    host: ConfigHost,
    state: Mutex<LoopState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the loop ticks for a given trust configuration.
pub fn tick_period(t: &TrustConfig) -> Duration {
    Duration::from_millis((t.poll_interval_ms.min(t.report_interval_ms) / 4).clamp(50, 1000))
}

impl TrustLoop {
    /// Starts the ticking thread; `None` (logged) if Envoy gave no scheduler.
    pub fn start(host: ConfigHost, t: &TrustConfig) -> Option<Self> {
        let Some(scheduler) = host.scheduler() else {
            log::error!("mcp-warden: no main-thread scheduler; trust reports are off");
            return None;
        };
        let stop = Arc::new(AtomicBool::new(false));
        let period = tick_period(t);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mcp-warden-trust".into())
            .spawn(move || tick_forever(scheduler, period, &flag))
            .map_err(|e| log::error!("mcp-warden: cannot start the trust thread: {e}"))
            .ok()?;
        Some(TrustLoop { host, state: Mutex::new(LoopState::default()), stop, thread: Some(thread) })
    }

    /// One tick (main thread): poll and report when due.
    pub fn tick(&self, t: &TrustConfig, clusters: &[Cluster], _event: u64, now: u64) {
        let mut st = lock(&self.state);
        if now.saturating_sub(st.last_poll_ms) >= t.poll_interval_ms && !st.calls.values().any(|c| *c == Call::Poll) {
            st.last_poll_ms = now;
            let version = state::process().trust.read().map_or(0, |table| table.version);
            let etag = format!("\"{version}\"");
            let auth = format!("Bearer {}", t.token);
            let headers = [
                (":method", "GET"),
                (":path", "/v1/scores"),
                (":authority", t.aggregator_authority.as_str()),
                ("authorization", auth.as_str()),
                ("if-none-match", etag.as_str()),
            ];
            self.call(&mut st, t, &headers, b"", Call::Poll);
        }
        if now.saturating_sub(st.last_report_ms) >= t.report_interval_ms && !st.calls.values().any(|c| *c == Call::Report) {
            st.last_report_ms = now;
            if st.inflight.is_none() {
                st.inflight = new_batch(t, clusters, now);
            }
            if let Some(batch) = st.inflight.clone() {
                let auth = format!("Bearer {}", t.token);
                let headers = [
                    (":method", "POST"),
                    (":path", "/v1/signals"),
                    (":authority", t.aggregator_authority.as_str()),
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ];
                self.call(&mut st, t, &headers, &batch, Call::Report);
            }
        }
        if now.saturating_sub(st.last_definitions_ms) >= t.report_interval_ms
            && now >= st.definitions_after_ms
            && !st.calls.values().any(|c| matches!(c, Call::Definitions(_)))
        {
            st.last_definitions_ms = now;
            let taken = lock(&state::process().outbox).take();
            if !taken.is_empty() {
                match serde_json::to_vec(&DefinitionBatch { definitions: taken.clone() }) {
                    Ok(body) => {
                        let auth = format!("Bearer {}", t.token);
                        let headers = [
                            (":method", "POST"),
                            (":path", "/v1/definitions"),
                            (":authority", t.aggregator_authority.as_str()),
                            ("authorization", auth.as_str()),
                            ("content-type", "application/json"),
                        ];
                        self.call(&mut st, t, &headers, &body, Call::Definitions(taken));
                    }
                    Err(e) => log::warn!("mcp-warden: cannot encode definitions: {e}"),
                }
            }
        }
    }

    fn call(&self, st: &mut LoopState, t: &TrustConfig, headers: &[(&str, &str)], body: &[u8], kind: Call) {
        match self.host.callout(&t.aggregator_cluster, headers, body, t.timeout_ms) {
            Some(id) => {
                st.calls.insert(id, kind);
            }
            None => log::warn!("mcp-warden: cannot call the aggregator on `{}`", t.aggregator_cluster),
        }
    }

    /// The aggregator answered (or the call failed).
    pub fn on_answer(&self, id: u64, answer: CalloutAnswer, now: u64) {
        let mut st = lock(&self.state);
        let Some(kind) = st.calls.remove(&id) else { return };
        let status: u16 = answer.header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let ok = match (kind, answer.ok, status) {
            (Call::Poll, true, 200) => match serde_json::from_slice::<ScoresDocument>(&answer.body) {
                Ok(doc) => {
                    if let Ok(mut table) = state::process().trust.write() {
                        *table = TrustTable::from_document(&doc);
                    }
                    true
                }
                Err(e) => {
                    log::warn!("mcp-warden: unreadable scores from the aggregator: {e}");
                    false
                }
            },
            (Call::Poll, true, 304) => true,
            (Call::Report, true, 200..=299) => {
                st.inflight = None;
                true
            }
            (Call::Definitions(_), true, 200..=299) => true,
            (Call::Definitions(_), true, 404) => {
                // An aggregator without the mesh-wide scan: the sidecar's own inspection stands.
                log::info!("mcp-warden: the aggregator does not take definitions (404); not sending any for 10 minutes");
                st.definitions_after_ms = now + DEFINITIONS_BACKOFF_MS;
                true
            }
            (Call::Definitions(_), true, 400 | 401 | 403 | 413) => {
                log::error!("mcp-warden: the aggregator refused definitions ({status}); dropped");
                false
            }
            (Call::Definitions(defs), _, _) => {
                lock(&state::process().outbox).requeue(defs);
                false
            }
            (Call::Report, true, 400 | 401 | 403 | 413) => {
                // It will never be accepted: drop it rather than resend it forever.
                log::error!("mcp-warden: the aggregator refused a trust report ({status}); dropped");
                st.inflight = None;
                false
            }
            _ => false,
        };
        match (ok, st.failing_since_ms) {
            (true, Some(_)) => {
                log::info!("mcp-warden: the trust aggregator answers again");
                st.failing_since_ms = None;
            }
            (false, None) => {
                log::warn!("mcp-warden: trust aggregator call failed (status {status}); keeping the last known table");
                st.failing_since_ms = Some(now);
            }
            _ => {}
        }
    }
}

impl Drop for TrustLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Commits a tick every `period` until stopped; the scheduler is deleted when the thread ends.
fn tick_forever(scheduler: ConfigScheduler, period: Duration, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(period);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        n = n.wrapping_add(1);
        scheduler.commit(n);
    }
}

/// The pending counts of this configuration's clusters turned into a new batch (and taken), if any.
fn new_batch(t: &TrustConfig, clusters: &[Cluster], now: u64) -> Option<Vec<u8>> {
    let batch_id = format!("{}-{:x}-{now}", t.sidecar, std::process::id());
    let names = clusters.iter().map(|c| c.name.as_str());
    let batch = lock(&state::process().pending).take_batch(names, &t.sidecar, batch_id, t.report_interval_ms)?;
    match serde_json::to_vec(&batch) {
        Ok(b) => Some(b),
        Err(e) => {
            log::warn!("mcp-warden: cannot encode a trust report: {e}");
            // Keep the counts for the next period.
            let kept = SignalAccumulator { clusters: batch.servers.into_iter().map(|r| (r.server.clone(), r)).collect() };
            lock(&state::process().pending).merge(&kept);
            None
        }
    }
}
