//! Which logical MCP server a request is for, by authority and path prefix.
//!
//! Built once from the configuration. Exact authorities are looked up in a hash map, so the
//! cost per request does not grow with the number of configured servers; wildcard and
//! path-only entries are scanned. When several servers match, the first in configuration order
//! wins.

use std::collections::HashMap;

/// How one server is matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerMatch {
    /// `host`, `host:port` or `*.suffix`; lowercase. `None`: any authority.
    pub authority: Option<String>,
    /// A path prefix matched on segment boundaries (`/mcp` matches `/mcp`, `/mcp/x`, `/mcp?q`,
    /// not `/mcpx`). `None`: any path.
    pub path_prefix: Option<String>,
}

/// The compiled lookup table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    exact: HashMap<String, Vec<usize>>,
    wildcard: Vec<(String, usize)>,
    any_authority: Vec<usize>,
    prefixes: Vec<Option<String>>,
}

impl Router {
    /// Indexes the servers' matchers (index = position in the slice).
    pub fn new(matches: &[ServerMatch]) -> Self {
        let mut r = Router::default();
        for (i, m) in matches.iter().enumerate() {
            r.prefixes.push(m.path_prefix.clone());
            match m.authority.as_deref() {
                None => r.any_authority.push(i),
                Some(a) if a.starts_with("*.") => r.wildcard.push((a.get(1..).unwrap_or("").to_string(), i)),
                Some(a) => r.exact.entry(a.to_string()).or_default().push(i),
            }
        }
        r
    }

    /// The index of the first server that matches, if any.
    pub fn route(&self, authority: &str, path: &str) -> Option<usize> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let authority = authority.to_ascii_lowercase();
        let host = host_of(&authority);
        let mut best: Option<usize> = None;
        let mut consider = |i: usize| {
            if best.is_none_or(|b| i < b) && self.path_matches(i, path) {
                best = Some(i);
            }
        };
        for key in [authority.as_str(), host] {
            if let Some(list) = self.exact.get(key) {
                list.iter().copied().for_each(&mut consider);
            }
            if host == authority {
                break;
            }
        }
        for (suffix, i) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                consider(*i);
            }
        }
        self.any_authority.iter().copied().for_each(&mut consider);
        best
    }

    fn path_matches(&self, i: usize, path: &str) -> bool {
        match self.prefixes.get(i) {
            Some(Some(prefix)) => path_has_prefix(path, prefix),
            Some(None) => true,
            None => false,
        }
    }
}

fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return authority.find(']').and_then(|i| authority.get(..=i)).unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Prefix match on path segment boundaries.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;

    fn m(a: Option<&str>, p: Option<&str>) -> ServerMatch {
        ServerMatch { authority: a.map(str::to_string), path_prefix: p.map(str::to_string) }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn matches_by_authority_port_wildcard_and_path() {
        let r = Router::new(&[
            m(Some("weather.mcp"), None),
            m(Some("tools.local:8080"), Some("/mcp")),
            m(Some("*.corp.example"), None),
            m(None, Some("/files")),
        ]);
        assert_eq!(r.route("weather.mcp", "/mcp"), Some(0));
        assert_eq!(r.route("Weather.MCP:9000", "/anything"), Some(0));
        assert_eq!(r.route("tools.local:8080", "/mcp?x=1"), Some(1));
        assert_eq!(r.route("tools.local:8080", "/mcp/sub"), Some(1));
        assert_eq!(r.route("tools.local:8080", "/mcpx"), None);
        assert_eq!(r.route("tools.local:9090", "/mcp"), None);
        assert_eq!(r.route("a.corp.example", "/"), Some(2));
        assert_eq!(r.route("corp.example", "/"), None);
        assert_eq!(r.route("127.0.0.1:10000", "/files/mcp"), Some(3));
        assert_eq!(r.route("127.0.0.1:10000", "/other"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn first_in_configuration_order_wins() {
        let r = Router::new(&[m(None, Some("/mcp")), m(Some("x.local"), Some("/mcp"))]);
        assert_eq!(r.route("x.local", "/mcp"), Some(0));
        let r = Router::new(&[m(Some("x.local"), Some("/mcp")), m(None, Some("/mcp"))]);
        assert_eq!(r.route("x.local", "/mcp"), Some(0));
        assert_eq!(r.route("y.local", "/mcp"), Some(1));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ipv6_authorities() {
        let r = Router::new(&[m(Some("[::1]"), None)]);
        assert_eq!(r.route("[::1]:8080", "/"), Some(0));
    }
}
