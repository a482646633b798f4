//! The HTTP service's protections, as one middleware in front of every route: a token bucket per
//! caller (per token name, sized by role; per peer address for requests without a known token),
//! the body read within a short deadline before the request takes a slot (408 past it), a cap on
//! requests in flight (503 past it, at once), and a deadline per request (503 when the work did
//! not finish). `/healthz` passes outside all of them. Refusals are JSON errors with
//! `Retry-After`. The header read timeout and the connection cap live in [`crate::serve`].

use crate::config::Limits;
use crate::error::ApiError;
use crate::ratelimit::Buckets;
use crate::auth::Tokens;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The limiter's state, shared by every request.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    started: Instant,
    principals: Mutex<Buckets<String>>,
    addresses: Mutex<Buckets<IpAddr>>,
    in_flight: Arc<Semaphore>,
    tokens: Tokens,
}

impl Guard {
    /// `tokens`: the callers it knows (their buckets are never evicted).
    pub fn new(limits: Limits, tokens: Tokens) -> Guard {
        use crate::auth::Role;
        let names: usize = [Role::Sidecar, Role::Rater, Role::Scanner, Role::Operator, Role::Reader].map(|r| tokens.count(r)).iter().sum();
        Guard {
            tokens,
            principals: Mutex::new(Buckets::new(names.max(1))),
            addresses: Mutex::new(Buckets::new(limits.tracked_addresses)),
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            started: Instant::now(),
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Peer addresses whose bucket is currently remembered (bounded by `tracked_addresses`).
    pub fn tracked_addresses(&self) -> usize {
        self.addresses.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The bearer token of a request, if it has a well-formed one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

fn retry_after(mut res: Response, ms: u64) -> Response {
    let secs = ms.div_ceil(1000).max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// Refuses a caller over its rate; `None` lets the request through.
fn rate_limit(g: &Guard, req: &Request) -> Option<Response> {
    let now = g.now_ms();
    let refused = match bearer(req.headers()).and_then(|t| g.tokens.lookup(t)) {
        Some(who) => {
            let rate = g.limits.rate(who.role);
            let r = g.principals.lock().unwrap_or_else(PoisonError::into_inner).take(&who.name, rate, now);
            r.err().map(|wait| {
                tracing::debug!(name = who.name, "rate limited");
                (
                    wait,
                    format!(
                        "rate limit exceeded for `{}` (role {}: {}/s, bursts of {}); retry in {} ms",
                        who.name, who.role, rate.per_second, rate.burst, wait
                    ),
                )
            })
        }
        None => {
            // Requests without a known token: per peer address. In-process callers (tests) have
            // no address and share one bucket.
            let ip = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let rate = g.limits.unauthenticated;
            let r = g.addresses.lock().unwrap_or_else(PoisonError::into_inner).take(&ip, rate, now);
            r.err().map(|wait| {
                tracing::debug!(%ip, "rate limited (no known token)");
                (
                    wait,
                    format!(
                        "rate limit exceeded for requests without a known token from {ip} ({}/s, bursts of {}); retry in {} ms",
                        rate.per_second, rate.burst, wait
                    ),
                )
            })
        }
    };
    refused.map(|(wait, msg)| retry_after(ApiError::new(StatusCode::TOO_MANY_REQUESTS, msg).into_response(), wait))
}

/// Probes are not rate limited nor counted against the request cap: behind a proxy every client
/// shares one address, and neither a flood of bad tokens nor a crowd of slow requests may fail
/// the readiness probe and take the aggregator out of rotation. (`/healthz` never waits for the
/// engine either: it reads the health the engine last recorded.)
const PROBE_PATH: &str = "/healthz";

/// Body limits: signal batches (many servers) and definition batches (whole tool definitions)
/// may be large, everything else is small.
pub const SIGNALS_MAX_BYTES: usize = 1 << 20;
pub const BODY_MAX_BYTES: usize = 16 << 10;

/// The most a request to `path` may send.
fn body_limit(path: &str) -> usize {
    if path == "/v1/signals" || path == "/v1/definitions" {
        SIGNALS_MAX_BYTES
    } else {
        BODY_MAX_BYTES
    }
}

fn body_timeout(limits: &Limits) -> u64 {
    limits.body_timeout_ms.min(limits.request_timeout_ms)
}

/// Reads the whole body (at most `limit` bytes) within the body deadline, before the request
/// takes a slot: a client trickling its body holds its connection, never a slot.
async fn receive(body: Body, limit: usize, limits: &Limits) -> Result<Bytes, Response> {
    let ms = body_timeout(limits);
    match tokio::time::timeout(Duration::from_millis(ms), Limited::new(body, limit).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            Err(ApiError::too_large(format!("request body is larger than {limit} bytes")).into_response())
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!("could not read the request body: {e}")).into_response()),
        Err(_) => {
            tracing::warn!("request body not received within {ms} ms");
            Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("the request body was not received within {ms} ms"))
                .into_response())
        }
    }
}

/// The middleware: rate limit; then the body, read within the body deadline; then a slot among
/// `max_concurrent_requests`; then the request deadline.
pub async fn protect(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if req.uri().path() == PROBE_PATH {
        return next.run(req).await;
    }
    if let Some(refused) = rate_limit(&g, &req) {
        return refused;
    }
    let limits = &g.limits;
    let (parts, body) = req.into_parts();
    // Only the bodies of known callers are read ahead (a handler refuses an unknown token
    // before it reads anything).
    let known = bearer(&parts.headers).and_then(|t| g.tokens.lookup(t)).is_some();
    let body = if known && !http_body::Body::is_end_stream(&body) {
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let limit = body_limit(parts.uri.path());
        if declared.is_some_and(|n| n > limit as u64) {
            return ApiError::too_large(format!("request body is larger than {limit} bytes")).into_response();
        }
        match receive(body, limit, limits).await {
            Ok(bytes) => Body::from(bytes),
            Err(refused) => return refused,
        }
    } else {
        body
    };
    let Ok(_permit) = g.in_flight.clone().try_acquire_owned() else {
        tracing::warn!("busy: {} requests in flight", limits.max_concurrent_requests);
        let e = ApiError::unavailable(format!(
            "the aggregator is busy ({} requests in flight, the most it takes at once); retry shortly",
            limits.max_concurrent_requests
        ));
        return retry_after(e.into_response(), 1000);
    };
    let timeout = Duration::from_millis(limits.request_timeout_ms);
    let received = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(&body)));
    let body = Body::new(Tracked { inner: body, received: received.clone() });
    match tokio::time::timeout(timeout, next.run(Request::from_parts(parts, body))).await {
        Ok(res) => res,
        Err(_) if !received.load(Ordering::Acquire) => {
            tracing::warn!("request body not received within {} ms", limits.request_timeout_ms);
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body was not received within {} ms", limits.request_timeout_ms),
            )
            .into_response()
        }
        Err(_) => {
            tracing::warn!("request not completed within {} ms", limits.request_timeout_ms);
            let e = ApiError::unavailable(format!(
                "the request was not completed within {} ms (the database is slow or busy); it was not acknowledged \
                 and may or may not have been applied: retry (signal batches are idempotent by batch_id)",
                limits.request_timeout_ms
            ));
            retry_after(e.into_response(), 1000)
        }
    }
}

/// The request body, noting when it has been read to its end.
struct Tracked {
    inner: Body,
    received: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || http_body::Body::is_end_stream(&self.inner) {
            self.received.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
