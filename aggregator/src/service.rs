//! The running service: the engine behind one mutex (one writer), the publication readers poll
//! without waiting, the tokens, the clock, and the periodic re-evaluation.

use crate::admission;
use crate::auth::{Role, Tokens};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Location;
use crate::engine::{self, Engine, OpenError, Publication, Published};
use crate::error::ApiError;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::audit::Verifier;
use crate::anchor::{self, Anchor};
use crate::views::{AuditVerification, BrokenLink, Health};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{error, info, warn};

/// Cheap to clone: every handler holds one.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Mutex<Engine>,
    publication: Publication,
    metrics: Arc<Metrics>,
    tokens: Tokens,
    clock: Arc<dyn Clock>,
    evaluate_interval: Duration,
    follow_interval: Duration,
    /// Shares its database with other replicas (PostgreSQL).
    shared: bool,
    guard: Arc<Guard>,
    /// Engine calls queued or running (bounded: a timed-out request's call still runs).
    queued: AtomicUsize,
    /// The health the engine showed after its last call (`GET /healthz` reads it without
    /// waiting for the engine): `Err` while the database cannot be read.
    health: Mutex<Result<Health, String>>,
    /// One audit verification at a time.
    verifying: tokio::sync::Semaphore,
    /// Where the audit head is exported (see [`crate::anchor`]).
    anchor: Mutex<Anchor>,
    /// Called before each page of a verification is hashed (tests pause a verification there).
    verify_hook: Mutex<Option<VerifyHook>>,
}

/// See [`Service::on_verify_page`].
pub type VerifyHook = Arc<dyn Fn() + Send + Sync>;

/// Audit entries read per engine call of a verification.
const AUDIT_PAGE: u32 = 500;

/// Counts an engine call until it is done (or its thread unwinds).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Service {
    /// Opens the database at `db` (a SQLite file, or a PostgreSQL URL) and publishes a first
    /// scores document.
    pub fn open(db: impl Into<Location>, tokens: Tokens, settings: Settings, clock: Arc<dyn Clock>) -> Result<Service, OpenError> {
        let location: Location = db.into();
        let mut settings = settings;
        let sidecars = tokens.names(Role::Sidecar);
        let quorum = admission::quorum(settings.sidecar.admission_quorum, sidecars);
        settings.sidecar.admission_quorum = Some(quorum);
        if quorum > sidecars.max(1) {
            warn!(
                quorum,
                sidecars,
                "server_admission_quorum is more than the sidecar credentials in the tokens file: no server is admitted \
                 by sidecars alone, only by operators and scanners"
            );
        } else {
            info!(quorum, sidecars, "a server is tracked once this many sidecar credentials named it (server_admission_quorum)");
        }
        let evaluate_interval = Duration::from_millis(settings.evaluate_interval_ms);
        let follow_interval = Duration::from_millis(settings.follow_interval_ms);
        let guard = Arc::new(Guard::new(settings.limits.clone(), tokens.clone()));
        let (operators, now) = (tokens.operators(), clock.now_ms());
        let settings_anchor = settings.audit_anchor_file.clone();
        let anchor_key = match &settings.audit_anchor_key_file {
            Some(p) => Some(anchor::load_key(p).map_err(|e| OpenError(format!("audit_anchor_key_file: {e}")))?),
            None => None,
        };
        // On a thread of its own: PostgreSQL's blocking client runs its own runtime, which must
        // not start inside the caller's (this is called from async code).
        let engine = std::thread::scope(|s| {
            s.spawn(|| Engine::open(&location, settings, operators, now))
                .join()
                .unwrap_or_else(|_| Err(OpenError("the database could not be opened: its thread failed".into())))
        })?;
        let shared = engine.is_shared();
        let mut engine = engine;
        let health = Mutex::new(engine.health_view());
        let anchor = Mutex::new(Anchor::new(settings_anchor, anchor_key));
        let publication = engine.publication();
        let metrics = engine.metrics();
        Ok(Service {
            inner: Arc::new(Inner {
                engine: Mutex::new(engine),
                publication,
                metrics,
                tokens,
                clock,
                evaluate_interval,
                follow_interval,
                shared,
                guard,
                queued: AtomicUsize::new(0),
                health,
                verifying: tokio::sync::Semaphore::new(1),
                anchor,
                verify_hook: Mutex::new(None),
            }),
        })
    }

    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Rate limits, request cap and timeouts (the HTTP layer's protections).
    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    /// The guard, for the middleware that holds it.
    pub fn guard_handle(&self) -> Arc<Guard> {
        self.inner.guard.clone()
    }

    /// The scores document polled by sidecars.
    pub fn published(&self) -> Arc<Published> {
        engine::current(&self.inner.publication)
    }

    /// Runs `f` on the engine on a blocking thread (SQLite commits wait for fsync).
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Engine, u64) -> Result<T, ApiError> + Send + 'static,
    {
        // Requests in flight are capped by the guard's slots; this bound is for calls whose
        // request timed out (they still run) and the timer's: twice the slots.
        let cap = 2 * self.inner.guard.limits().max_concurrent_requests;
        let waiting = self.inner.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= cap {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable(format!(
                "the database is busy ({waiting} calls waiting for it); nothing was done: retry shortly"
            )));
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _queued = Queued(&inner.queued);
            let mut engine = inner.engine.lock().unwrap_or_else(PoisonError::into_inner);
            let now = inner.clock.now_ms();
            let r = f(&mut engine, now);
            *inner.health.lock().unwrap_or_else(PoisonError::into_inner) = engine.health_view();
            r
        })
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
    }

    /// `GET /v1/audit/verify`: the chain read in pages of `AUDIT_PAGE` entries (the engine is
    /// held only while a page is read) and hashed away from the engine, one verification at a
    /// time (others wait their turn, never the engine).
    pub async fn verify_audit(&self) -> Result<AuditVerification, ApiError> {
        let _turn = self.inner.verifying.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
        let (path, key) = {
            let a = self.inner.anchor.lock().unwrap_or_else(PoisonError::into_inner);
            (a.path().map(|p| p.to_path_buf()), a.key().cloned())
        };
        let read = match path {
            Some(p) => anchor::read(&p, key.as_ref()).map_err(ApiError::internal)?,
            None => Default::default(),
        };
        if let Some((id, reason)) = read.forged {
            return Ok(AuditVerification { ok: false, entries: 0, head: None, broken: Some(BrokenLink { id, reason }) });
        }
        let anchors = Arc::new(read.heads);
        let mut v = Verifier::new();
        let mut after = 0i64;
        loop {
            let (rows, last) = self.run(move |e, _| e.audit_page(after, AUDIT_PAGE)).await?;
            let anchored = anchors.clone();
            let hook = self.inner.verify_hook.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let hashed = tokio::task::spawn_blocking(move || {
                if let Some(hook) = hook {
                    hook();
                }
                for r in &rows {
                    if let Some(why) = anchor::check(&anchored, r.id, &r.hash) {
                        return (v.clone(), Some(v.broken_at(r.id, why)), after);
                    }
                    if let Some(done) = v.push(&r.fields(), &r.hash) {
                        return (v, Some(done), after);
                    }
                }
                let next = rows.last().map_or(after, |r| r.id);
                (v, None, next)
            })
            .await
            .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?;
            let (verifier, done, next) = hashed;
            if let Some(done) = done {
                return Ok(done);
            }
            v = verifier;
            after = next;
            if let Some(issued) = last {
                let done = v.finish(issued);
                if done.ok {
                    let last_id = done.head.as_ref().map_or(0, |h| h.id);
                    if let Some((id, why)) = anchor::check_end(&anchors, last_id) {
                        return Ok(AuditVerification { ok: false, broken: Some(BrokenLink { id, reason: why }), ..done });
                    }
                }
                return Ok(done);
            }
        }
    }

    /// Runs `hook` before each page of a verification is hashed, where the verification holds
    /// neither the engine nor the database (tests check that writes go on meanwhile).
    #[doc(hidden)]
    pub fn on_verify_page(&self, hook: Option<VerifyHook>) {
        *self.inner.verify_hook.lock().unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// Exports the audit chain's head if it moved (log, metrics, anchor file).
    pub async fn export_audit_head(&self) -> Result<bool, ApiError> {
        let head = self.run(|e, _| e.audit_head()).await?;
        if let Some((id, _)) = &head {
            self.inner.metrics.audit_head(*id);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            inner.anchor.lock().unwrap_or_else(PoisonError::into_inner).record(now, head).map_err(ApiError::unavailable)
        })
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
    }

    /// What `GET /healthz` answers: the health recorded after the engine's last call (the
    /// timer's rounds also check that the database answers), never waiting for the engine.
    pub fn health(&self) -> Result<Health, String> {
        self.inner.health.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// One periodic re-evaluation (what the timer runs; tests call it directly).
    pub async fn tick(&self) -> Result<(), ApiError> {
        self.run(|e, now| e.tick(now)).await
    }

    /// One round of the timer: re-evaluates if this process leads (always on SQLite), else
    /// follows the database. `true` if it led.
    pub async fn round(&self) -> Result<bool, ApiError> {
        let led = self.run(|e, now| e.round(now)).await;
        if let Err(e) = self.export_audit_head().await {
            error!("exporting the audit head failed: {e}");
        }
        // Whether the database answers at all (PostgreSQL may be unreachable between writes).
        let inner = self.inner.clone();
        let checked = self.run(|e, _| e.health()).await;
        if let Err(e) = checked {
            *inner.health.lock().unwrap_or_else(PoisonError::into_inner) = Err(e.message);
        }
        led
    }

    /// Does this process share its database with other replicas (PostgreSQL)?
    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// Catches up with what other replicas wrote (PostgreSQL); `true` if it reloaded.
    pub async fn follow(&self) -> Result<bool, ApiError> {
        self.run(|e, _| e.follow()).await
    }

    /// Re-evaluates every `evaluate_interval_ms` (on PostgreSQL: only the leader; the others
    /// follow the database every `follow_interval_ms`, and take the lead there if it is free)
    /// until the returned task is dropped or aborted.
    pub fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut evaluate = tokio::time::interval(svc.inner.evaluate_interval);
            evaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut follow = tokio::time::interval(svc.inner.follow_interval);
            follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = evaluate.tick() => {
                        if let Err(e) = svc.round().await {
                            error!("periodic evaluation failed: {e}");
                        }
                    }
                    _ = follow.tick(), if svc.inner.shared => {
                        if let Err(e) = svc.run(|e, now| e.follow_round(now)).await {
                            error!("following the database failed: {e}");
                        }
                    }
                }
            }
        })
    }
}
