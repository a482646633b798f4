//! The HTTP API (see `openapi.yaml`): routes, bearer-token checks, bounded JSON bodies. Every
//! handler authorizes first, then reads and validates its body, then hands the engine one call.

use crate::auth::Role;
use crate::error::ApiError;
use crate::service::Service;
use crate::validate;
use crate::access::{authorize, json, ANY};
use crate::{admin, dashboard, guard, scrape};
use crate::views::{ApproveRequest, Health, RevokeRequest};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use mcp_warden_core::trust::wire::{DefinitionBatch, FlagRequest, QuarantineRequest, RatingRequest, SignalBatch};
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use crate::guard::{BODY_MAX_BYTES, SIGNALS_MAX_BYTES};
const AUDIT_DEFAULT_LIMIT: u32 = 100;
const AUDIT_MAX_LIMIT: u32 = 1000;

/// Every route the router serves, as (method, path); `openapi.yaml` describes exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("POST", "/v1/signals"),
    ("GET", "/v1/scores"),
    ("GET", "/v1/servers/{server}"),
    ("POST", "/v1/servers/{server}/quarantine"),
    ("POST", "/v1/servers/{server}/release"),
    ("POST", "/v1/servers/{server}/admit"),
    ("GET", "/v1/provisional"),
    ("POST", "/v1/servers/{server}/approvals"),
    ("POST", "/v1/servers/{server}/revoke"),
    ("GET", "/v1/approvals"),
    ("POST", "/v1/definitions"),
    ("POST", "/v1/ratings"),
    ("POST", "/v1/flags"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
    ("POST", "/v1/admin/backup"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/app.js"),
    ("GET", "/dashboard/app.css"),
];

pub fn router(service: Service) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/signals", post(post_signals))
        .route("/v1/scores", get(get_scores))
        .route("/v1/servers/{server}", get(get_server))
        .route("/v1/servers/{server}/quarantine", post(post_quarantine))
        .route("/v1/servers/{server}/release", post(post_release))
        .route("/v1/servers/{server}/admit", post(post_admit))
        .route("/v1/provisional", get(get_provisional))
        .route("/v1/servers/{server}/approvals", post(post_approval))
        .route("/v1/servers/{server}/revoke", post(post_revoke))
        .route("/v1/approvals", get(get_approvals))
        .route("/v1/definitions", post(post_definitions))
        .route("/v1/ratings", post(post_rating))
        .route("/v1/flags", post(post_flag))
        .route("/v1/audit", get(get_audit))
        .route("/v1/audit/verify", get(admin::get_audit_verify))
        .route("/v1/admin/backup", post(admin::post_backup))
        .route("/metrics", get(scrape::get_metrics))
        .route("/", get(dashboard::root))
        .route(dashboard::PATH, get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .fallback(|| async { ApiError::not_found("no such endpoint (see openapi.yaml)") })
        // Rate limits, the cap on requests in flight, and the request deadline.
        .layer(middleware::from_fn_with_state(service.guard_handle(), guard::protect))
        // Outermost: counts every answer, the other layers' refusals included.
        .layer(middleware::from_fn_with_state(service.clone(), scrape::track))
        .with_state(service)
}

/// Reads at most `limit` bytes and parses them as `T`; errors name the field at fault.
async fn read_json<T: DeserializeOwned>(headers: &HeaderMap, body: Body, limit: usize) -> Result<T, ApiError> {
    let too_large = || ApiError::too_large(format!("request body is larger than {limit} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(ApiError::bad_request(format!("could not read the request body: {e}"))),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body is empty: a JSON object is required"));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid request body: {}", e.inner()))
        } else {
            ApiError::bad_request(format!("invalid request body: field `{path}`: {}", e.inner()))
        }
    })?;
    de.end().map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok(value)
}

fn server_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(server) = path.map_err(|e| ApiError::bad_request(format!("invalid server in path: {e}")))?;
    validate::name(&server).map_err(|m| ApiError::bad_request(format!("server in path: {m}")))?;
    Ok(server)
}

async fn healthz(State(svc): State<Service>) -> Response {
    match svc.health() {
        Ok(h) => json(StatusCode::OK, &h),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Health { status: format!("unavailable: {e}"), version: svc.published().version, servers: 0, reason: None },
        ),
    }
}

async fn post_signals(State(svc): State<Service>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Sidecar], "report signals")?;
    let batch: SignalBatch = read_json(&headers, body, SIGNALS_MAX_BYTES).await?;
    validate::signal_batch(&batch).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.signals(&who, &batch, now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

/// Does `If-None-Match` name `etag` (or `*`)? Weak validators compare equal to strong ones.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
    })
}

/// The highest version among the ETags of `If-None-Match` (ours are `"<version>"`).
fn newest_known_version(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| t.trim().trim_start_matches("W/").trim_matches('"').parse::<u64>().ok())
        .max()
}

async fn get_scores(State(svc): State<Service>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&svc, &headers, ANY, "read scores")?;
    let mut published = svc.published();
    // Replicas: a sidecar that already got a newer version from another replica makes this one
    // catch up first (one read of the database), rather than be handed an older document.
    if svc.is_shared() && newest_known_version(&headers).is_some_and(|v| v > published.version) {
        if let Err(e) = svc.follow().await {
            tracing::warn!("could not catch up with the database for a newer poller: {e}");
        }
        published = svc.published();
    }
    let etag = format!("\"{}\"", published.version);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::internal(e.to_string()))?;
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if matches_etag(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value), cache]).into_response());
    }
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag_value), cache, (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        published.document.clone(),
    )
        .into_response())
}

async fn get_server(
    State(svc): State<Service>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&svc, &headers, ANY, "read server details")?;
    let server = server_name(path)?;
    let detail = svc.run(move |e, now| e.detail(&server, now)).await?;
    Ok(json(StatusCode::OK, &detail))
}

async fn post_quarantine(
    State(svc): State<Service>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Operator], "quarantine servers")?;
    let server = server_name(path)?;
    let req: QuarantineRequest = read_json(&headers, body, BODY_MAX_BYTES).await?;
    validate::quarantine(&req).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.quarantine(&who, &server, req.reason.trim(), now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

async fn post_release(
    State(svc): State<Service>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Operator], "release servers")?;
    let server = server_name(path)?;
    let req: QuarantineRequest = read_json(&headers, body, BODY_MAX_BYTES).await?;
    validate::quarantine(&req).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.release(&who, &server, req.reason.trim(), now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

async fn post_approval(
    State(svc): State<Service>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Operator], "approve tool definitions")?;
    let server = server_name(path)?;
    let req: ApproveRequest = read_json(&headers, body, BODY_MAX_BYTES).await?;
    validate::approve(&req).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.approve(&who, &server, &req, now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

async fn post_revoke(
    State(svc): State<Service>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Operator], "revoke tool definitions")?;
    let server = server_name(path)?;
    let req: RevokeRequest = read_json(&headers, body, BODY_MAX_BYTES).await?;
    validate::revoke(&req).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.revoke(&who, &server, &req, now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

async fn post_definitions(State(svc): State<Service>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    authorize(&svc, &headers, &[Role::Sidecar, Role::Scanner, Role::Operator], "submit definitions")?;
    let batch: DefinitionBatch = read_json(&headers, body, SIGNALS_MAX_BYTES).await?;
    validate::definitions(&batch).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.definitions(&batch, now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsQuery {
    server: Option<String>,
}

async fn get_approvals(
    State(svc): State<Service>,
    headers: HeaderMap,
    query: Result<Query<ApprovalsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&svc, &headers, ANY, "read held tool changes")?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    if let Some(s) = &q.server {
        validate::name(s).map_err(|m| ApiError::bad_request(format!("field `server`: {m}")))?;
    }
    let view = svc.run(move |e, _| e.approvals(q.server.as_deref())).await?;
    Ok(json(StatusCode::OK, &view))
}

async fn post_admit(
    State(svc): State<Service>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Operator], "admit servers")?;
    let server = server_name(path)?;
    let req: QuarantineRequest = read_json(&headers, body, BODY_MAX_BYTES).await?;
    validate::quarantine(&req).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.admit(&who, &server, req.reason.trim(), now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

/// Provisional servers listed at most.
const PROVISIONAL_LISTED: usize = 1000;

async fn get_provisional(State(svc): State<Service>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&svc, &headers, ANY, "read provisional servers")?;
    let view = svc.run(move |e, _| e.provisional(PROVISIONAL_LISTED)).await?;
    Ok(json(StatusCode::OK, &view))
}

async fn post_rating(State(svc): State<Service>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Rater, Role::Operator], "rate")?;
    let req: RatingRequest = read_json(&headers, body, BODY_MAX_BYTES).await?;
    validate::rating(&req, &who.name).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.rate(&who, &req, now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

async fn post_flag(State(svc): State<Service>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Scanner, Role::Operator], "flag servers")?;
    let req: FlagRequest = read_json(&headers, body, BODY_MAX_BYTES).await?;
    validate::flag(&req).map_err(ApiError::bad_request)?;
    let ack = svc.run(move |e, now| e.flag(&who, &req, now)).await?;
    Ok(json(StatusCode::OK, &ack))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    server: Option<String>,
    limit: Option<u32>,
    before_id: Option<i64>,
}

async fn get_audit(
    State(svc): State<Service>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&svc, &headers, &[Role::Operator], "read the audit log")?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(AUDIT_DEFAULT_LIMIT);
    if !(1..=AUDIT_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("field `limit`: must be in 1..={AUDIT_MAX_LIMIT}, got {limit}")));
    }
    let page = svc.run(move |e, _| e.audit(q.server.as_deref(), q.before_id, limit)).await?;
    Ok(json(StatusCode::OK, &page))
}
