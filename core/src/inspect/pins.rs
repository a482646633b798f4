//! Tool pinning: the fingerprint first seen for each (server, tool), so a changed definition
//! (a rug pull) is noticed. Trust on first use; every table is bounded (the least recently seen
//! tool is forgotten first) and a server's table has a compact byte form for shared data.
//!
//! Also cross-server shadowing: the same tool name offered by several servers of one sidecar.

use super::config::PinPolicy;
use super::fingerprint::Fingerprint;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A pinned definition that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinChange {
    pub old: Fingerprint,
    pub new: Fingerprint,
}

/// Longest tool name kept as is in a pin table; longer names are kept as `#` + a hash.
pub const MAX_PIN_NAME: usize = 128;

/// One server's pins: tool name → fingerprint, at most `cap` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPins {
    cap: usize,
    /// name → (fingerprint, last seen sequence).
    tools: BTreeMap<String, (Fingerprint, u64)>,
    /// last seen sequence → name (oldest first).
    order: BTreeMap<u64, String>,
    next: u64,
}

/// Why a stored pin table could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinsDecodeError(pub &'static str);

impl fmt::Display for PinsDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad pin table: {}", self.0)
    }
}

impl std::error::Error for PinsDecodeError {}

const CODEC_VERSION: u8 = 1;

/// A tool's capability print lives in the same table under its name behind a NUL (MCP tool
/// names never hold one): the shared-data form stays as it was.
fn capability_key(tool: &str) -> String {
    let k = pin_key(tool);
    let mut out = String::with_capacity(k.len() + 1);
    out.push('\0');
    out.push_str(k.get(..k.len().min(MAX_PIN_NAME)).unwrap_or(&k));
    out
}

/// What a definition can do, as a fingerprint: its parameters and which are required, without
/// any wording; and, in the first byte's low bits, the safety claims of its annotations
/// (read-only, not destructive, closed world). A change clears only with the same parameters and
/// no claim dropped: members a newer protocol version adds (`outputSchema`, `title`, ...) and
/// claims gained do not hold a tool.
pub fn capability_print(tool: &serde_json::Value) -> Fingerprint {
    use serde_json::{json, Value};
    let schema = tool.get("inputSchema");
    let props: Vec<&String> = schema.and_then(|s| s.get("properties")).and_then(Value::as_object).map(|m| m.keys().collect()).unwrap_or_default();
    let mut required: Vec<&str> = schema.and_then(|s| s.get("required")).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    required.sort_unstable();
    let mut fp = Fingerprint::of(&json!({"p": props, "r": required, "n": tool.get("name")}));
    let hint = |h: &str| tool.get("annotations").and_then(|a| a.get(h)).and_then(Value::as_bool);
    let claims = u8::from(hint("readOnlyHint") == Some(true)) | u8::from(hint("destructiveHint") == Some(false)) << 1 | u8::from(hint("openWorldHint") == Some(false)) << 2;
    if let Some(b) = fp.0.first_mut() {
        *b = (*b & 0xF8) | claims;
    }
    fp
}

/// Whether `new` gives no capability `old` had not: the same parameters, and every safety claim
/// of `old` still made.
fn no_new_capability(old: Fingerprint, new: Fingerprint) -> bool {
    let (o, n) = (old.0.first().copied().unwrap_or(0), new.0.first().copied().unwrap_or(0));
    old.0.get(1..) == new.0.get(1..) && (o & 0xF8) == (n & 0xF8) && (o & 0x07) & !(n & 0x07) == 0
}

fn pin_key(tool: &str) -> String {
    if tool.len() <= MAX_PIN_NAME {
        tool.to_string()
    } else {
        format!("#{}", Fingerprint::of(&serde_json::Value::String(tool.to_string())))
    }
}

impl ServerPins {
    /// An empty table holding at most `cap` tools (at least 1).
    pub fn new(cap: usize) -> Self {
        ServerPins { cap: cap.max(1), tools: BTreeMap::new(), order: BTreeMap::new(), next: 0 }
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The pinned fingerprint of a tool.
    pub fn get(&self, tool: &str) -> Option<Fingerprint> {
        self.tools.get(&pin_key(tool)).map(|&(fp, _)| fp)
    }

    /// Tool names, in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// Records that the server lists `tool` with `fp`. The first sighting pins it; a different
    /// fingerprint later is returned as a change and becomes the new pin (one report per change).
    pub fn observe(&mut self, tool: &str, fp: Fingerprint) -> Option<PinChange> {
        let key = pin_key(tool);
        let seq = self.next;
        self.next += 1;
        if let Some((old, last)) = self.tools.get_mut(&key) {
            let change = (*old != fp).then_some(PinChange { old: *old, new: fp });
            *old = fp;
            let prev = std::mem::replace(last, seq);
            self.order.remove(&prev);
            self.order.insert(seq, key);
            return change;
        }
        while self.tools.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.tools.remove(&oldest);
        }
        self.tools.insert(key.clone(), (fp, seq));
        self.order.insert(seq, key);
        None
    }

    /// Records that the server lists `tool` with `fp`, where a changed definition replaces the
    /// pin only when it is cleared: `policy` record; or approved; or, under hold, `clean` (it
    /// scanned clean) with the same capability print `cap` as the pinned one. Otherwise the old
    /// pin stays (so every later list holds the tool too) and the change is returned as held.
    /// The second member is why the change is held (`None`: cleared).
    pub fn observe_held(&mut self, tool: &str, fp: Fingerprint, cap: Fingerprint, clean: bool, approved: bool, policy: PinPolicy) -> Option<(PinChange, Option<&'static str>)> {
        let cap_key = capability_key(tool);
        let Some(old) = self.get(tool) else {
            self.observe(tool, fp);
            self.observe_key_touch(cap_key, cap);
            return None;
        };
        if old == fp {
            self.observe(tool, fp);
            return None;
        }
        let same_caps = self.tools.get(&cap_key).is_some_and(|(c, _)| no_new_capability(*c, cap));
        let held = match policy {
            _ if approved => None,
            PinPolicy::Record => None,
            PinPolicy::Hold if !clean => Some("the new definition did not scan clean"),
            PinPolicy::Hold if !same_caps => Some("the new definition gains a capability (parameters or annotations)"),
            PinPolicy::Hold => None,
            PinPolicy::Block => Some("the server's rug-pull policy is block"),
        };
        let change = PinChange { old, new: fp };
        if held.is_none() {
            self.observe(tool, fp);
            self.observe_key_touch(cap_key, cap);
        } else {
            self.observe(tool, old);
        }
        Some((change, held))
    }

    /// The capability print pinned with `tool` (see [`capability_print`]).
    pub fn capability(&self, tool: &str) -> Option<Fingerprint> {
        self.tools.get(&capability_key(tool)).map(|&(fp, _)| fp)
    }

    /// Pins `tool`'s capability print (next to its fingerprint).
    pub fn observe_capability(&mut self, tool: &str, cap: Fingerprint) {
        self.observe_key_touch(capability_key(tool), cap);
    }

    fn observe_key_touch(&mut self, key: String, fp: Fingerprint) {
        if let Some((old, last)) = self.tools.get_mut(&key) {
            *old = fp;
            let prev = *last;
            let seq = self.next;
            self.next += 1;
            *last = seq;
            self.order.remove(&prev);
            self.order.insert(seq, key);
            return;
        }
        self.observe_key(key, fp);
    }

    /// Most bytes [`ServerPins::encode`] produces for a table of `cap` tools.
    pub fn max_encoded_len(cap: usize) -> usize {
        3 + cap * (1 + MAX_PIN_NAME + 16)
    }

    /// The compact form: version, count (u16 LE), then per tool, least recently seen first,
    /// name length (u8), name, 16 fingerprint bytes.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.tools.len().min(usize::from(u16::MAX));
        let mut out = Vec::with_capacity(3 + n * 40);
        out.push(CODEC_VERSION);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        let skip = self.order.len().saturating_sub(n);
        for name in self.order.values().skip(skip) {
            if let Some((fp, _)) = self.tools.get(name) {
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&fp.0);
            }
        }
        out
    }

    /// Reads [`ServerPins::encode`]'s form into a table of at most `cap` tools (the most recently
    /// seen are kept).
    pub fn decode(bytes: &[u8], cap: usize) -> Result<ServerPins, PinsDecodeError> {
        let mut pins = ServerPins::new(cap);
        let (&version, rest) = bytes.split_first().ok_or(PinsDecodeError("empty"))?;
        if version != CODEC_VERSION {
            return Err(PinsDecodeError("unknown version"));
        }
        let (count, mut rest) = rest.split_at_checked(2).ok_or(PinsDecodeError("truncated count"))?;
        let count = u16::from_le_bytes([count.first().copied().unwrap_or(0), count.get(1).copied().unwrap_or(0)]);
        for _ in 0..count {
            let (&len, r) = rest.split_first().ok_or(PinsDecodeError("truncated entry"))?;
            let len = usize::from(len);
            if len == 0 || len > MAX_PIN_NAME + 1 {
                return Err(PinsDecodeError("bad name length"));
            }
            let (name, r) = r.split_at_checked(len).ok_or(PinsDecodeError("truncated name"))?;
            let (fp, r) = r.split_at_checked(16).ok_or(PinsDecodeError("truncated fingerprint"))?;
            let name = std::str::from_utf8(name).map_err(|_| PinsDecodeError("name not UTF-8"))?;
            let mut f = [0u8; 16];
            f.copy_from_slice(fp);
            if pins.tools.contains_key(name) {
                return Err(PinsDecodeError("duplicate name"));
            }
            if name.len() > MAX_PIN_NAME && !name.starts_with('#') {
                return Err(PinsDecodeError("bad name length"));
            }
            pins.observe_key(name.to_string(), Fingerprint(f));
            rest = r;
        }
        if !rest.is_empty() {
            return Err(PinsDecodeError("trailing bytes"));
        }
        Ok(pins)
    }

    fn observe_key(&mut self, key: String, fp: Fingerprint) {
        while self.tools.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.tools.remove(&oldest);
        }
        let seq = self.next;
        self.next += 1;
        self.tools.insert(key.clone(), (fp, seq));
        self.order.insert(seq, key);
    }
}

/// Pins of every server of a sidecar (one [`ServerPins`] per server, each bounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPins {
    per_server_cap: usize,
    max_servers: usize,
    servers: BTreeMap<String, ServerPins>,
    /// Fingerprints an operator approved, per server: a held change to one of them is cleared.
    approved: BTreeMap<String, BTreeSet<Fingerprint>>,
}

/// Most approved fingerprints kept per server (the trust table bounds them the same way).
pub const MAX_APPROVED_PER_SERVER: usize = 256;

impl ToolPins {
    /// `per_server_cap` tools per server, at most `max_servers` servers (further servers are not
    /// pinned: their changes go unnoticed, which the configuration bounds anyway).
    pub fn new(per_server_cap: usize, max_servers: usize) -> Self {
        ToolPins { per_server_cap, max_servers, servers: BTreeMap::new(), approved: BTreeMap::new() }
    }

    /// Marks a definition's fingerprint as approved by an operator for `server` (at most
    /// [`MAX_APPROVED_PER_SERVER`] per server, for servers this table may pin; past that the
    /// approval is not kept and the change stays held).
    pub fn approve(&mut self, server: &str, fp: Fingerprint) {
        if !self.approved.contains_key(server) && self.approved.len() >= self.max_servers {
            return;
        }
        let set = self.approved.entry(server.to_string()).or_default();
        if set.len() < MAX_APPROVED_PER_SERVER {
            set.insert(fp);
        }
    }

    /// Replaces `server`'s approvals (with those the trust table publishes).
    pub fn set_approved(&mut self, server: &str, fps: impl IntoIterator<Item = Fingerprint>) {
        self.approved.remove(server);
        for fp in fps {
            self.approve(server, fp);
        }
    }

    /// Whether `fp` was approved for `server`.
    pub fn is_approved(&self, server: &str, fp: Fingerprint) -> bool {
        self.approved.get(server).is_some_and(|s| s.contains(&fp))
    }

    /// See [`ServerPins::observe_held`].
    pub fn observe_held(&mut self, server: &str, tool: &str, fp: Fingerprint, cap: Fingerprint, clean: bool, policy: PinPolicy) -> Option<(PinChange, Option<&'static str>)> {
        let approved = self.is_approved(server, fp);
        self.server_mut(server)?.observe_held(tool, fp, cap, clean, approved, policy)
    }

    /// See [`ServerPins::observe`].
    pub fn observe(&mut self, server: &str, tool: &str, fp: Fingerprint) -> Option<PinChange> {
        self.server_mut(server)?.observe(tool, fp)
    }

    /// A server's table, created empty on first use (`None` past `max_servers`).
    pub fn server_mut(&mut self, server: &str) -> Option<&mut ServerPins> {
        if !self.servers.contains_key(server) {
            if self.servers.len() >= self.max_servers {
                return None;
            }
            self.servers.insert(server.to_string(), ServerPins::new(self.per_server_cap));
        }
        self.servers.get_mut(server)
    }

    pub fn server(&self, server: &str) -> Option<&ServerPins> {
        self.servers.get(server)
    }

    /// Replaces a server's table (e.g. with one read from shared data).
    pub fn load_server(&mut self, server: &str, bytes: &[u8]) -> Result<(), PinsDecodeError> {
        let pins = ServerPins::decode(bytes, self.per_server_cap)?;
        if !self.servers.contains_key(server) && self.servers.len() >= self.max_servers {
            return Err(PinsDecodeError("too many servers"));
        }
        self.servers.insert(server.to_string(), pins);
        Ok(())
    }

    /// A server's table in compact form (`None` if it has none).
    pub fn encode_server(&self, server: &str) -> Option<Vec<u8>> {
        self.servers.get(server).map(ServerPins::encode)
    }

    /// Tool names offered by more than one server.
    pub fn shadowing(&self) -> Vec<Shadowed> {
        detect_shadowing(self.servers.iter().map(|(s, p)| (s.as_str(), p.names())))
    }
}

/// A tool name offered by several servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    pub tool: String,
    /// In name order.
    pub servers: Vec<String>,
}

/// Tool names that more than one server lists, in name order.
pub fn detect_shadowing<'a, S, T>(lists: S) -> Vec<Shadowed>
where
    S: IntoIterator<Item = (&'a str, T)>,
    T: IntoIterator<Item = &'a str>,
{
    let mut by_tool: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (server, tools) in lists {
        for tool in tools {
            by_tool.entry(tool).or_default().insert(server);
        }
    }
    by_tool
        .into_iter()
        .filter(|(_, servers)| servers.len() > 1)
        .map(|(tool, servers)| Shadowed { tool: tool.to_string(), servers: servers.into_iter().map(str::to_string).collect() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 16])
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn first_sight_pins_and_a_change_is_reported_once() {
        let mut p = ToolPins::new(8, 4);
        assert_eq!(p.observe("s", "add", fp(1)), None);
        assert_eq!(p.observe("s", "add", fp(1)), None);
        assert_eq!(p.observe("s", "add", fp(2)), Some(PinChange { old: fp(1), new: fp(2) }));
        assert_eq!(p.observe("s", "add", fp(2)), None);
        assert_eq!(p.observe("other", "add", fp(9)), None, "pins are per server");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_least_recently_seen_tool_is_evicted() {
        let mut p = ServerPins::new(3);
        for (i, t) in ["a", "b", "c"].into_iter().enumerate() {
            p.observe(t, fp(i as u8));
        }
        p.observe("a", fp(0)); // a is fresh again; b is now the oldest
        p.observe("d", fp(3));
        assert_eq!(p.len(), 3);
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("a"), Some(fp(0)));
        // b comes back: pinned anew, no change reported.
        assert_eq!(p.observe("b", fp(7)), None);
        assert_eq!(p.get("c"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn codec_round_trip_and_bounds() {
        let mut p = ServerPins::new(4);
        let long = "x".repeat(300);
        for (i, t) in ["read_file", "write_file", long.as_str()].into_iter().enumerate() {
            p.observe(t, fp(i as u8));
        }
        let bytes = p.encode();
        assert!(bytes.len() <= ServerPins::max_encoded_len(4));
        let q = ServerPins::decode(&bytes, 4).unwrap();
        assert_eq!(q.get(&long), Some(fp(2)));
        assert_eq!(q.encode(), bytes);
        // Decoding into a smaller table keeps the most recently seen.
        let small = ServerPins::decode(&bytes, 1).unwrap();
        assert_eq!((small.len(), small.get(&long)), (1, Some(fp(2))));
        for bad in [&b""[..], b"\x02\x00\x00", b"\x01\x01", b"\x01\x01\x00\x03abc", b"\x01\x00\x00x"] {
            assert!(ServerPins::decode(bad, 4).is_err(), "{bad:?}");
        }
        let mut all = ToolPins::new(4, 1);
        all.load_server("s", &bytes).unwrap();
        assert!(all.load_server("t", &bytes).is_err());
        assert_eq!(all.encode_server("s"), Some(bytes));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_held_change_clears_once_approved_for_its_server_only() {
        let tool = serde_json::json!({"name": "t", "inputSchema": {"properties": {"a": {}}}});
        let wider = serde_json::json!({"name": "t", "inputSchema": {"properties": {"a": {}, "b": {}}, "required": ["b"]}});
        let (cap, cap2) = (capability_print(&tool), capability_print(&wider));
        let mut p = ToolPins::new(8, 4);
        assert_eq!(p.observe_held("s", "t", fp(1), cap, true, PinPolicy::Hold), None);
        // A new required parameter: held, and again on the next list (the old pin stays).
        for _ in 0..2 {
            let (change, why) = p.observe_held("s", "t", fp(2), cap2, true, PinPolicy::Hold).unwrap();
            assert_eq!(change, PinChange { old: fp(1), new: fp(2) });
            assert!(why.unwrap().contains("capability"), "{why:?}");
        }
        // Approved on another server: still held here.
        p.approve("other", fp(2));
        assert!(p.observe_held("s", "t", fp(2), cap2, true, PinPolicy::Hold).unwrap().1.is_some());
        // Approved here: cleared and pinned; the next list is no change at all.
        p.set_approved("s", [fp(2)]);
        assert!(p.is_approved("s", fp(2)) && !p.is_approved("s", fp(3)));
        assert_eq!(p.observe_held("s", "t", fp(2), cap2, true, PinPolicy::Hold).unwrap().1, None);
        assert_eq!(p.observe_held("s", "t", fp(2), cap2, true, PinPolicy::Hold), None);
        assert_eq!(p.server("s").unwrap().get("t"), Some(fp(2)));
        // Approval clears under block too; set_approved replaces.
        p.set_approved("s", []);
        let (_, why) = p.observe_held("s", "t", fp(3), cap2, true, PinPolicy::Block).unwrap();
        assert_eq!(why, Some("the server's rug-pull policy is block"));
        p.set_approved("s", [fp(3)]);
        assert_eq!(p.observe_held("s", "t", fp(3), cap2, true, PinPolicy::Block).unwrap().1, None);
        // Bounded per server and by the server count.
        p.set_approved("s", (0..=255u8).map(|b| Fingerprint([b; 16])).chain([Fingerprint([7; 16])]));
        p.set_approved("many", (0..300u16).map(|i| { let mut f = [0u8; 16]; f[..2].copy_from_slice(&i.to_le_bytes()); Fingerprint(f) }));
        assert_eq!(p.approved["many"].len(), MAX_APPROVED_PER_SERVER);
        for s in ["x", "y", "z"] {
            p.approve(s, fp(9));
        }
        assert!(p.approved.len() <= 4);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn shadowing_across_servers() {
        let found = detect_shadowing([
            ("files", vec!["read_file", "search"]),
            ("evil", vec!["read_file", "add"]),
            ("web", vec!["search", "fetch"]),
        ]);
        assert_eq!(
            found,
            vec![
                Shadowed { tool: "read_file".into(), servers: vec!["evil".into(), "files".into()] },
                Shadowed { tool: "search".into(), servers: vec!["files".into(), "web".into()] },
            ]
        );
        let mut p = ToolPins::new(8, 8);
        p.observe("a", "x", fp(1));
        p.observe("b", "x", fp(2));
        assert_eq!(p.shadowing().len(), 1);
    }
}
