//! What every handler does first and last: check the caller's bearer token and role, and answer
//! in JSON.

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::service::Service;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every role.
pub(crate) const ANY: &[Role] = &[Role::Sidecar, Role::Rater, Role::Scanner, Role::Operator, Role::Reader];

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
        Err(e) => ApiError::internal(format!("cannot serialize the answer: {e}")).into_response(),
    }
}

/// The caller, if its bearer token is known and its role is one of `allowed`.
pub(crate) fn authorize(svc: &Service, headers: &HeaderMap, allowed: &[Role], action: &str) -> Result<Principal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token (send `Authorization: Bearer <token>`)"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let who = svc.tokens().lookup(token).ok_or_else(|| {
        tracing::debug!("unknown token refused for {action}");
        ApiError::unauthorized("unknown token")
    })?;
    if !allowed.contains(&who.role) {
        let needs: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        tracing::warn!(name = who.name, role = %who.role, "refused: {action}");
        return Err(ApiError::forbidden(format!(
            "token `{}` has role `{}`, which may not {action} (needs {})",
            who.name,
            who.role,
            needs.join(" or ")
        )));
    }
    Ok(who.clone())
}

