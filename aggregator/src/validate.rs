//! Checks on what callers send, beyond its JSON shape: names, bounded text, numbers in range.
//! Each error is a message that names the field.

use mcp_warden_core::trust::wire::{
    DefinitionBatch, FlagRequest, QuarantineRequest, RatingRequest, SignalBatch, Subject, MAX_CONFIGURED,
};

/// Longest server, rater or sidecar name (a DNS name's length; cluster names fit).
pub const MAX_NAME: usize = 253;
/// Longest batch id, rule id, tool name, fingerprint.
pub const MAX_ID: usize = 256;
/// Longest reason or comment.
pub const MAX_TEXT: usize = 2048;
/// Evidence excerpts and flag descriptions are cut to this many bytes before they are stored.
pub const MAX_EVIDENCE: usize = 1024;
/// Most servers in one batch, security events per server in one batch.
pub const MAX_BATCH_SERVERS: usize = 10_000;
pub const MAX_EVENTS_PER_REPORT: usize = 1_000;
/// Most calls one report may claim per counter (keeps lifetime totals far from overflow).
pub const MAX_COUNT: u64 = 1_000_000_000;

/// A server, rater or sidecar name: printable ASCII without spaces (Envoy cluster names such
/// as Istio's `outbound|8080||svc.ns.svc.cluster.local` qualify).
pub fn name(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_NAME {
        return Err(format!("at most {MAX_NAME} characters, got {}", v.len()));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("only printable ASCII without spaces is allowed, found {c:?}"));
    }
    Ok(())
}

fn id(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_ID {
        return Err(format!("at most {MAX_ID} bytes, got {}", v.len()));
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn text(v: &str, required: bool) -> Result<(), String> {
    if required && v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_TEXT {
        return Err(format!("at most {MAX_TEXT} bytes, got {}", v.len()));
    }
    Ok(())
}

fn at(field: String) -> impl Fn(String) -> String {
    move |m| format!("field `{field}`: {m}")
}

/// Cuts `v` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(v: &str, max: usize) -> String {
    if v.len() <= max {
        return v.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", v.get(..end).unwrap_or_default())
}

pub fn signal_batch(b: &SignalBatch) -> Result<(), String> {
    name(&b.sidecar).map_err(at("sidecar".into()))?;
    id(&b.batch_id).map_err(at("batch_id".into()))?;
    if b.servers.len() > MAX_BATCH_SERVERS {
        return Err(format!("field `servers`: at most {MAX_BATCH_SERVERS} servers per batch, got {}", b.servers.len()));
    }
    if b.configured.len() > MAX_CONFIGURED {
        return Err(format!("field `configured`: at most {MAX_CONFIGURED} names, got {}", b.configured.len()));
    }
    for (i, c) in b.configured.iter().enumerate() {
        name(c).map_err(at(format!("configured[{i}]")))?;
    }
    for (i, r) in b.servers.iter().enumerate() {
        name(&r.server).map_err(at(format!("servers[{i}].server")))?;
        let o = &r.outcomes;
        let counts = std::iter::once(("success".to_string(), o.success))
            .chain(std::iter::once(("slow".to_string(), o.slow)))
            .chain(o.failures.iter().map(|(k, v)| (format!("failures.{k}"), *v)));
        for (f, v) in counts {
            if v > MAX_COUNT {
                return Err(format!("field `servers[{i}].outcomes.{f}`: at most {MAX_COUNT}, got {v}"));
            }
        }
        if o.failures.len() > 64 {
            return Err(format!("field `servers[{i}].outcomes.failures`: at most 64 failure kinds"));
        }
        for k in o.failures.keys() {
            id(k).map_err(at(format!("servers[{i}].outcomes.failures")))?;
        }
        if r.security.len() > MAX_EVENTS_PER_REPORT {
            return Err(format!("field `servers[{i}].security`: at most {MAX_EVENTS_PER_REPORT} events per report"));
        }
        for (j, e) in r.security.iter().enumerate() {
            id(&e.rule).map_err(at(format!("servers[{i}].security[{j}].rule")))?;
            if let Some(t) = &e.tool {
                id(t).map_err(at(format!("servers[{i}].security[{j}].tool")))?;
            }
            for (f, v) in [("old_fingerprint", &e.old_fingerprint), ("new_fingerprint", &e.new_fingerprint)] {
                if let Some(v) = v {
                    id(v).map_err(at(format!("servers[{i}].security[{j}].{f}")))?;
                }
            }
        }
    }
    Ok(())
}

pub fn rating(r: &RatingRequest, rater: &str) -> Result<(), String> {
    match &r.subject {
        Subject::Server(n) => name(n).map_err(at("subject.name".into()))?,
        Subject::Rater(n) => {
            name(n).map_err(at("subject.name".into()))?;
            if n == rater {
                return Err("field `subject.name`: a rater cannot vouch for itself".into());
            }
        }
    }
    if !(r.value.is_finite() && (0.0..=1.0).contains(&r.value)) {
        return Err(format!("field `value`: must be in [0, 1], got {}", r.value));
    }
    if let Some(c) = &r.comment {
        text(c, false).map_err(at("comment".into()))?;
    }
    Ok(())
}

pub fn flag(f: &FlagRequest) -> Result<(), String> {
    name(&f.server).map_err(at("server".into()))?;
    id(&f.rule).map_err(at("rule".into()))?;
    if let Some(t) = &f.tool {
        id(t).map_err(at("tool".into()))?;
    }
    if let Some(d) = &f.description {
        text(d, false).map_err(at("description".into()))?;
    }
    Ok(())
}

pub fn quarantine(q: &QuarantineRequest) -> Result<(), String> {
    text(&q.reason, true).map_err(at("reason".into()))
}

/// A definition's fingerprint: 32 lowercase hex digits (what sidecars report).
pub fn fingerprint(v: &str) -> Result<(), String> {
    if v.len() == 32 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(format!("a fingerprint is 32 lowercase hex digits, got {:?}", truncate(v, 40)))
    }
}

/// Most definitions in one `POST /v1/definitions`.
pub const MAX_DEFINITIONS: usize = 256;

pub fn definitions(b: &DefinitionBatch) -> Result<(), String> {
    if b.definitions.len() > MAX_DEFINITIONS {
        return Err(format!("field `definitions`: at most {MAX_DEFINITIONS} per batch, got {}", b.definitions.len()));
    }
    for (i, d) in b.definitions.iter().enumerate() {
        name(&d.server).map_err(at(format!("definitions[{i}].server")))?;
        if let Some(f) = &d.fingerprint {
            fingerprint(f).map_err(at(format!("definitions[{i}].fingerprint")))?;
        }
        match d.definition.get("name").and_then(serde_json::Value::as_str) {
            Some(n) => id(n).map_err(at(format!("definitions[{i}].definition.name")))?,
            None => return Err(format!("field `definitions[{i}].definition`: a tool definition (an object with a string `name`)")),
        }
    }
    Ok(())
}

pub fn approve(a: &crate::views::ApproveRequest) -> Result<(), String> {
    fingerprint(&a.fingerprint).map_err(at("fingerprint".into()))?;
    if let Some(t) = &a.tool {
        id(t).map_err(at("tool".into()))?;
    }
    text(&a.reason, true).map_err(at("reason".into()))
}

pub fn revoke(r: &crate::views::RevokeRequest) -> Result<(), String> {
    fingerprint(&r.fingerprint).map_err(at("fingerprint".into()))?;
    text(&r.reason, true).map_err(at("reason".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sidecars_check_of_a_configured_name_is_this_one() {
        let long = "x".repeat(254);
        for n in ["outbound|8080||w.ns.svc.cluster.local", "", "a b", "tab\t", "é", long.as_str(), &long[..253]] {
            assert_eq!(mcp_warden_core::trust::wire::is_server_name(n), name(n).is_ok(), "{n:?}");
        }
    }

    #[test]
    fn names() {
        assert!(name("outbound|8080||weather.ns.svc.cluster.local").is_ok());
        assert!(name("").is_err());
        assert!(name("a b").unwrap_err().contains("' '"));
        assert!(name(&"x".repeat(254)).is_err());
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate(&"é".repeat(100), 11);
        assert!(t.len() <= 11 && t.ends_with('…'), "{t}");
    }
}
