//! The dashboard's routes (content types, security headers, no token needed for the page) and
//! `GET /metrics` after real requests through the Router.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use axum::http::StatusCode;
use common::*;
use mcp_warden_aggregator::Settings;
use serde_json::json;

fn header<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

fn text(r: &Resp) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

#[tokio::test]
async fn dashboard_files_are_public_with_a_strict_policy() {
    let h = Harness::new();
    for (path, ctype, needle) in [
        ("/dashboard", "text/html; charset=utf-8", "<title>mcp-warden trust</title>"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8", "textContent"),
        ("/dashboard/app.css", "text/css; charset=utf-8", ".state.quarantined"),
    ] {
        let r = h.request("GET", path, None, None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(header(&r, "content-type"), ctype, "{path}");
        let csp = header(&r, "content-security-policy");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"), "{csp}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert_eq!(header(&r, "x-frame-options"), "DENY");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer");
        assert!(text(&r).contains(needle), "{path}");
    }
    let r = h.request("GET", "/", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(header(&r, "location"), "/dashboard");
    // The page is public; its data is not.
    assert_eq!(h.request("GET", "/v1/scores", None, None, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.request("POST", "/dashboard", None, None, &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn metrics_count_requests_writes_and_show_each_server() {
    let h = Harness::new();
    h.report(SIDECAR, "b1", "weather_primary", 10, 0).await.ok();
    h.report(SIDECAR, "b1", "weather_primary", 10, 0).await.ok(); // a retry: duplicate
    h.report(SIDECAR, "b2", "files_primary", 0, 30).await.ok();
    h.post("/v1/ratings", RATER, json!({"subject": {"kind": "server", "name": "weather_primary"}, "value": 0.9})).await.ok();
    h.post("/v1/flags", SCANNER, json!({"server": "weather_primary", "severity": "low", "rule": "r1"})).await.ok();
    h.post("/v1/servers/weather_primary/quarantine", OPERATOR, json!({"reason": "drill"})).await.ok();
    h.post("/v1/servers/weather_primary/release", OPERATOR, json!({"reason": "drill over"})).await.ok();
    // A critical flag: the aggregator quarantines by itself.
    h.post("/v1/flags", SCANNER, json!({"server": "files_primary", "severity": "critical", "rule": "poison"})).await.ok();
    h.get("/v1/scores", READER).await.ok();
    let etag = h.get("/v1/scores", READER).await.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(h.request("GET", "/v1/scores", Some(READER), None, &[("if-none-match", &etag)]).await.status, StatusCode::NOT_MODIFIED);
    assert_eq!(h.get("/v1/servers/nope", READER).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.request("GET", "/v1/servers/%3Cscript%3E/x/y", None, None, &[]).await.status, StatusCode::NOT_FOUND);

    let r = h.request("GET", "/metrics", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let m = text(&r);
    for want in [
        r#"mcp_warden_aggregator_http_requests_total{method="POST",route="/v1/signals",status="200"} 3"#,
        r#"mcp_warden_aggregator_http_requests_total{method="GET",route="/v1/scores",status="304"} 1"#,
        r#"mcp_warden_aggregator_http_requests_total{method="GET",route="/v1/servers/{server}",status="404"} 1"#,
        r#"mcp_warden_aggregator_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"mcp_warden_aggregator_http_request_duration_seconds_count{method="POST",route="/v1/signals"} 3"#,
        r#"mcp_warden_aggregator_signal_batches_total{result="applied"} 2"#,
        r#"mcp_warden_aggregator_signal_batches_total{result="duplicate"} 1"#,
        r#"mcp_warden_aggregator_signal_reports_total{result="applied"} 2"#,
        r#"mcp_warden_aggregator_ratings_total{subject="server"} 1"#,
        r#"mcp_warden_aggregator_flags_total{severity="low",counted="true"} 1"#,
        r#"mcp_warden_aggregator_flags_total{severity="critical",counted="true"} 1"#,
        r#"mcp_warden_aggregator_decisions_total{action="quarantine"} 1"#,
        r#"mcp_warden_aggregator_decisions_total{action="release"} 1"#,
        r#"mcp_warden_aggregator_decisions_total{action="auto_quarantine"} 1"#,
        r#"mcp_warden_aggregator_store_writes_total{result="committed"}"#,
        "mcp_warden_aggregator_store_write_duration_seconds_count",
        r#"mcp_warden_aggregator_servers{state="quarantined"} 1"#,
        r#"mcp_warden_aggregator_servers{state="trusted"} 1"#,
        r#"mcp_warden_aggregator_server_state{server="files_primary",state="quarantined"} 1"#,
        r#"mcp_warden_aggregator_server_state{server="files_primary",state="trusted"} 0"#,
        r#"mcp_warden_aggregator_server_state{server="weather_primary",state="trusted"} 1"#,
        r#"mcp_warden_aggregator_server_score{server="weather_primary"} 0."#,
        r#"mcp_warden_aggregator_server_component{server="files_primary",component="performance"} 0."#,
        "# TYPE mcp_warden_aggregator_http_request_duration_seconds histogram",
        "# UNIT mcp_warden_aggregator_http_request_duration_seconds seconds",
        "# EOF",
    ] {
        assert!(m.contains(want), "missing `{want}` in:\n{m}");
    }
    let version = h.scores().await["version"].as_u64().unwrap();
    assert!(m.contains(&format!("mcp_warden_aggregator_scores_version {version}")), "{m}");
    // The raw path of an unknown route never becomes a label.
    assert!(!m.contains("script"), "{m}");
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let h = Harness::with_settings(Settings { metrics_require_token: true, ..Settings::default() });
    let r = h.request("GET", "/metrics", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.request("GET", "/metrics", Some("not-a-known-token-at-all"), None, &[]).await.status, StatusCode::UNAUTHORIZED);
    let r = h.get("/metrics", READER).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(text(&r).contains(r#"mcp_warden_aggregator_http_requests_total{method="GET",route="/metrics",status="401"} 2"#));
}
