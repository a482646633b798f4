//! The accept loop (in place of `axum::serve`, which has neither): HTTP/1 connections with a
//! header read timeout (a client that trickles its headers, or leaves a keep-alive connection
//! idle, is disconnected), at most `max_connections_per_peer` open from one address (past it that
//! address's new connections are closed at once, so one client cannot take the whole
//! `max_connections`), at most `max_connections` open at once (past it the listener waits for one
//! to close; the kernel's backlog holds new ones), the peer address handed to the handlers
//! (per-address rate limits), and a graceful shutdown.

use crate::config::Limits;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service as _;
use tracing::{debug, info, warn};

/// How long a graceful shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Open connections per peer address (entries removed when they reach 0: bounded by the
/// connections open).
#[derive(Default)]
struct PerPeer(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a peer; counted down when dropped.
struct PeerSlot(Arc<PerPeer>, IpAddr);

impl PerPeer {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot(self.clone(), ip))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains open connections.
pub async fn serve(listener: TcpListener, app: Router, limits: &Limits, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_peer = Arc::new(PerPeer::default());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        if connections.available_permits() == 0 {
            warn!("{} connections open (max_connections): not accepting more until one closes", limits.max_connections);
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(peer_slot) = per_peer.take(peer.ip(), limits.max_connections_per_peer) else {
            debug!(%peer, "{} connections open from this address (max_connections_per_peer): closed", limits.max_connections_per_peer);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(req)
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, "connection ended: {e}");
            }
            drop(peer_slot);
            drop(permit);
        });
    }
    info!("no longer accepting connections; draining");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => warn!("connections still open after {} s: closing them", DRAIN.as_secs()),
    }
}
