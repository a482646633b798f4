//! `GET /metrics` and the middleware that counts and times every HTTP request (the registry
//! itself is [`crate::metrics`]).

use crate::access::{authorize, ANY};
use crate::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::service::Service;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// Middleware: counts and times every request by its route's pattern (`unmatched` for paths no
/// route serves, so a scanner probing random paths cannot grow the label set).
pub async fn track(State(svc): State<Service>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    let route = route.as_deref().unwrap_or("unmatched");
    svc.metrics().observe_http(&method, route, resp.status(), started.elapsed());
    resp
}

/// `GET /metrics`.
pub async fn get_metrics(State(svc): State<Service>, headers: HeaderMap) -> Result<Response, ApiError> {
    let metrics = svc.metrics();
    if metrics.require_token() {
        authorize(&svc, &headers, ANY, "read metrics")?;
    }
    let published = svc.published();
    let body = metrics.render(published.version, published.servers()).map_err(|e| ApiError::internal(format!("cannot render metrics: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

