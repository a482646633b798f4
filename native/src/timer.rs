//! Wake-ups for requests (a hedge past its deadline): Envoy gives HTTP filters no timer, so one
//! module thread keeps the due times and, when one comes, commits the request's own scheduler,
//! which runs `on_scheduled` on the worker that owns the request. Bounded like the wasm filter's
//! timer list; a request gone by then is skipped by Envoy (its scheduler only holds a weak
//! reference to the filter).

use crate::abi;
use crate::state::lock;
use std::collections::BinaryHeap;
use std::cmp::Reverse;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Most wake-ups waiting at once, for the whole process (the wasm filter keeps 4096 per VM, one
/// VM per worker); past it a new one is dropped and that request's hedge is not armed.
const MAX_TIMERS: usize = 16_384;

/// One request's scheduler (deleted when the request and every pending wake-up let go of it).
pub struct RequestScheduler {
    ptr: abi::SchedulerPtr,
    /// False once the request is gone: its wake-ups are dropped instead of waking its worker.
    live: AtomicBool,
}

// SAFETY: Envoy's per-request scheduler is made to be committed from any thread; it posts to the
// worker that owns the request and holds only a weak reference to the filter.
unsafe impl Send for RequestScheduler {}
unsafe impl Sync for RequestScheduler {}

impl RequestScheduler {
    /// A scheduler for the stream of this hook; `None` if Envoy gave none.
    pub fn new(s: &crate::host::Stream) -> Option<Arc<Self>> {
        // SAFETY: called inside a hook with its live filter pointer.
        let p = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(s.0) };
        (!p.is_null()).then(|| Arc::new(RequestScheduler { ptr: p, live: AtomicBool::new(true) }))
    }

    /// The request ended: pending wake-ups are dropped (most hedge deadlines outlive the call).
    pub fn retire(&self) {
        self.live.store(false, Ordering::Relaxed);
    }

    fn commit(&self, event: u64) {
        if self.live.load(Ordering::Relaxed) {
            // SAFETY: live until dropped.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(self.ptr, event) }
        }
    }
}

impl Drop for RequestScheduler {
    fn drop(&mut self) {
        // SAFETY: created by scheduler_new, deleted once.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(self.ptr) }
    }
}

struct Due {
    at_ms: u64,
    seq: u64,
    scheduler: Arc<RequestScheduler>,
    event: u64,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

#[derive(Default)]
struct Timers {
    heap: Mutex<(BinaryHeap<Reverse<Due>>, u64)>,
    wake: Condvar,
}

fn timers() -> &'static Timers {
    static TIMERS: OnceLock<Timers> = OnceLock::new();
    TIMERS.get_or_init(|| {
        if let Err(e) = std::thread::Builder::new().name("mcp-warden-timer".into()).spawn(run) {
            log::error!("mcp-warden: cannot start the timer thread; hedges are off: {e}");
        }
        Timers::default()
    })
}

/// Asks for `on_scheduled(event)` on the request's worker at (or soon after) `at_ms`.
pub fn wake_at(scheduler: &Arc<RequestScheduler>, at_ms: u64, event: u64) {
    let t = timers();
    let mut guard = lock(&t.heap);
    if guard.0.len() >= MAX_TIMERS {
        return;
    }
    guard.1 = guard.1.wrapping_add(1);
    let seq = guard.1;
    // The thread sleeps until the earliest wake-up: only an earlier one needs to wake it (hedge
    // deadlines are all "now + the same delay", so usually none does).
    let earliest = guard.0.peek().is_none_or(|Reverse(d)| at_ms < d.at_ms);
    guard.0.push(Reverse(Due { at_ms, seq, scheduler: Arc::clone(scheduler), event }));
    drop(guard);
    if earliest {
        t.wake.notify_one();
    }
}

fn run() {
    let t = timers();
    let mut guard = lock(&t.heap);
    loop {
        let now = crate::host::now_ms();
        while guard.0.peek().is_some_and(|Reverse(d)| d.at_ms <= now) {
            if let Some(Reverse(d)) = guard.0.pop() {
                d.scheduler.commit(d.event);
            }
        }
        let wait = guard.0.peek().map_or(Duration::from_secs(60), |Reverse(d)| Duration::from_millis(d.at_ms.saturating_sub(now)));
        guard = match t.wake.wait_timeout(guard, wait) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
    }
}
