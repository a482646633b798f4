//! The trust dashboard: one static page, its script and its style sheet, compiled into the
//! binary (`assets/`). The page is public and holds no data; it asks for a bearer token and
//! calls the API with it, so reading needs a token of any role and acting an operator's.
//! A strict Content-Security-Policy allows only these same-origin files (no inline script or
//! style), and the script writes server-provided text only through `textContent`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

/// Where the page is served; `GET /` redirects here.
pub const PATH: &str = "/dashboard";

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// Only same-origin script, style and API calls; no plugins, frames, forms or base rewriting.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 7] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
        // Small and compiled in: revalidate each time, so a new binary's page is never mixed
        // with an old script.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (StatusCode::OK, headers, body).into_response()
}

/// `GET /`.
pub async fn root() -> Redirect {
    Redirect::to(PATH)
}

/// `GET /dashboard`.
pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/app.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        // Everything the policy allows is what the page references: no inline script, style or
        // event handler attributes (they would be blocked).
        assert!(PAGE.contains(r#"<script src="/dashboard/app.js" defer></script>"#));
        assert!(PAGE.contains(r#"<link rel="stylesheet" href="/dashboard/app.css">"#));
        assert_eq!(PAGE.matches("<script").count(), 1);
        for banned in ["<style", " style=", " onclick=", " onload=", " onerror=", "javascript:", "http://", "https://"] {
            assert!(!PAGE.contains(banned), "page contains `{banned}`");
        }
        // The script never parses HTML from strings.
        for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!SCRIPT.contains(banned), "script contains `{banned}`");
        }
        assert!(!CSP.contains("unsafe"));
    }
}
