//! The running service: the engine behind one mutex (one writer), the publication readers poll
//! without waiting, the tokens, the clock, and the periodic re-evaluation.

use crate::auth::Tokens;
use crate::clock::Clock;
use crate::config::Settings;
use crate::engine::{self, Engine, OpenError, Publication, Published};
use crate::error::ApiError;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::error;

/// Cheap to clone: every handler holds one.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Mutex<Engine>,
    publication: Publication,
    tokens: Tokens,
    clock: Arc<dyn Clock>,
    evaluate_interval: Duration,
}

impl Service {
    /// Opens the database at `db` and publishes a first scores document.
    pub fn open(db: &Path, tokens: Tokens, settings: Settings, clock: Arc<dyn Clock>) -> Result<Service, OpenError> {
        let evaluate_interval = Duration::from_millis(settings.evaluate_interval_ms);
        let engine = Engine::open(db, settings, tokens.operators(), clock.now_ms())?;
        let publication = engine.publication();
        Ok(Service { inner: Arc::new(Inner { engine: Mutex::new(engine), publication, tokens, clock, evaluate_interval }) })
    }

    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
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
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut engine = inner.engine.lock().unwrap_or_else(PoisonError::into_inner);
            let now = inner.clock.now_ms();
            f(&mut engine, now)
        })
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
    }

    /// One periodic re-evaluation (what the timer runs; tests call it directly).
    pub async fn tick(&self) -> Result<(), ApiError> {
        self.run(|e, now| e.tick(now)).await
    }

    /// Re-evaluates every `evaluate_interval_ms` until the returned task is dropped or aborted.
    pub fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(svc.inner.evaluate_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(e) = svc.tick().await {
                    error!("periodic evaluation failed: {e}");
                }
            }
        })
    }
}
