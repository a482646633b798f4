//! Operator maintenance routes: verifying the audit log's hash chain and online backups.

use crate::auth::Role;
use crate::error::ApiError;
use crate::access::{authorize, json};
use crate::service::Service;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// `GET /v1/audit/verify`: 200 with `ok: false` and the first broken link when the chain breaks.
pub async fn get_audit_verify(State(svc): State<Service>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&svc, &headers, &[Role::Operator, Role::Reader], "verify the audit log")?;
    let v = svc.verify_audit().await?;
    if let Some(b) = &v.broken {
        tracing::error!(entry = b.id, "the audit log's hash chain is broken: {}", b.reason);
    }
    Ok(json(StatusCode::OK, &v))
}

/// `POST /v1/admin/backup`: the whole database as one SQLite file, consistent as of one moment.
pub async fn post_backup(State(svc): State<Service>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, &[Role::Operator], "back up the database")?;
    let (bytes, now) = svc.run(|e, now| Ok((e.backup()?, now))).await?;
    tracing::info!(operator = who.name, bytes = bytes.len(), "database backup taken");
    let disposition = format!("attachment; filename=\"mcp-warden-trust-{now}.db\"");
    let disposition = HeaderValue::from_str(&disposition).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.sqlite3")),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        bytes,
    )
        .into_response())
}
