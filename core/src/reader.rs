//! The configuration's JSON reader: one parse into a plain tree, then typed reads that name the
//! field in every error (`servers[1].fallbacks[0]`, `clusters.x.breaker.window`).
//!
//! Derived `Deserialize` impls with a path-tracking deserializer did the same job but cost a
//! parser per configuration type (a third of the `.wasm`); this reader is shared by every type.
//! Objects refuse unknown and repeated members; `null` counts as absent.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A configuration the filter refuses, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "invalid plugin configuration: {}", self.message)
        } else {
            write!(f, "invalid plugin configuration: field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A JSON value with object members in document order (repeats kept, so that the reader can
/// refuse them with their path).
#[derive(Debug)]
pub enum Node {
    Null,
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Uint(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(if v >= 0 { Node::Uint(v as u64) } else { Node::Int(v) })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Node::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            out.push((k, v));
        }
        Ok(Node::Object(out))
    }
}

/// Parses one JSON document (nothing may follow it); a syntax error names no field.
pub fn parse(bytes: &[u8]) -> Result<Node, ConfigError> {
    let whole = |e: &dyn fmt::Display| ConfigError { field: String::new(), message: e.to_string() };
    let text = std::str::from_utf8(bytes).map_err(|e| whole(&e))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let node = Node::deserialize(&mut de).map_err(|e| whole(&e))?;
    // Anything after the document (a second object, say) would otherwise be silently ignored.
    de.end().map_err(|e| whole(&e))?;
    Ok(node)
}

/// What a value is, as errors describe it.
fn describe(n: &Node) -> String {
    match n {
        Node::Null => "null".into(),
        Node::Bool(b) => format!("boolean `{b}`"),
        Node::Uint(v) => format!("integer `{v}`"),
        Node::Int(v) => format!("integer `{v}`"),
        Node::Float(v) => format!("floating point `{v}`"),
        Node::Str(s) => format!("string {s:?}"),
        Node::Array(_) => "an array".into(),
        Node::Object(_) => "an object".into(),
    }
}

/// One value of the document. Its path is worked out only for an error, by finding the value in
/// the tree: reading a large configuration builds no path strings.
#[derive(Debug, Clone, Copy)]
pub struct Val<'a> {
    pub node: &'a Node,
    root: &'a Node,
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The members and indexes from `from` down to `target` (the same value, not an equal one).
fn trail<'n>(from: &'n Node, target: &Node, out: &mut Vec<Seg<'n>>) -> bool {
    if std::ptr::eq(from, target) {
        return true;
    }
    match from {
        Node::Array(items) => {
            for (i, n) in items.iter().enumerate() {
                out.push(Seg::Index(i));
                if trail(n, target, out) {
                    return true;
                }
                out.pop();
            }
        }
        Node::Object(members) => {
            for (k, n) in members {
                out.push(Seg::Key(k));
                if trail(n, target, out) {
                    return true;
                }
                out.pop();
            }
        }
        _ => {}
    }
    false
}

impl<'a> Val<'a> {
    /// The document's root.
    pub fn root(node: &'a Node) -> Self {
        Val { node, root: node }
    }

    /// Where this value is: `servers[1].fallbacks[0]`, `clusters.x.breaker` (empty at the root).
    pub fn path(&self) -> String {
        let mut segs = Vec::new();
        trail(self.root, self.node, &mut segs);
        let mut out = String::new();
        for seg in segs {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// An error about this value.
    #[inline(never)]
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError { field: self.path(), message: message.into() }
    }

    fn at(&self, node: &'a Node) -> Val<'a> {
        Val { node, root: self.root }
    }

    fn wrong(&self, expected: &str) -> ConfigError {
        self.error(format!("invalid type: {}, expected {expected}", describe(self.node)))
    }

    pub fn bool(&self) -> Result<bool, ConfigError> {
        match self.node {
            Node::Bool(b) => Ok(*b),
            _ => Err(self.wrong("a boolean")),
        }
    }

    /// An integer in `lo..=hi` (`what` names the range in the error: "u32", "an integer ≥ 1").
    fn int(&self, lo: i128, hi: i128, what: &str) -> Result<i128, ConfigError> {
        let v = match self.node {
            Node::Uint(v) => i128::from(*v),
            Node::Int(v) => i128::from(*v),
            _ => return Err(self.wrong(what)),
        };
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(self.error(format!("invalid value: integer `{v}`, expected {what}")))
        }
    }

    pub fn u64(&self) -> Result<u64, ConfigError> {
        self.int(0, i128::from(u64::MAX), "u64").map(|v| v as u64)
    }

    pub fn u32(&self) -> Result<u32, ConfigError> {
        self.int(0, i128::from(u32::MAX), "u32").map(|v| v as u32)
    }

    pub fn i64(&self) -> Result<i64, ConfigError> {
        self.int(i128::from(i64::MIN), i128::from(i64::MAX), "i64").map(|v| v as i64)
    }

    pub fn usize(&self) -> Result<usize, ConfigError> {
        self.int(0, usize::MAX as i128, "usize").map(|v| v as usize)
    }

    pub fn f64(&self) -> Result<f64, ConfigError> {
        match self.node {
            Node::Uint(v) => Ok(*v as f64),
            Node::Int(v) => Ok(*v as f64),
            Node::Float(v) => Ok(*v),
            _ => Err(self.wrong("a number")),
        }
    }

    pub fn str(&self) -> Result<&'a str, ConfigError> {
        match self.node {
            Node::Str(s) => Ok(s),
            _ => Err(self.wrong("a string")),
        }
    }

    pub fn string(&self) -> Result<String, ConfigError> {
        self.str().map(str::to_string)
    }

    /// One of a fixed set of strings (an enum).
    pub fn choice<T: Copy>(&self, options: &[(&str, T)]) -> Result<T, ConfigError> {
        let s = self.str()?;
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Ok(*v),
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
                Err(self.error(format!("unknown variant `{s}`, expected one of {}", names.join(", "))))
            }
        }
    }

    /// The elements of an array.
    pub fn array(&self) -> Result<Vec<Val<'a>>, ConfigError> {
        match self.node {
            Node::Array(items) => {
                Ok(items.iter().map(|node| self.at(node)).collect())
            }
            _ => Err(self.wrong("an array")),
        }
    }

    /// An array whose every element is read by `f`.
    pub fn list<T>(&self, f: impl Fn(&Val<'a>) -> Result<T, ConfigError>) -> Result<Vec<T>, ConfigError> {
        self.array()?.iter().map(f).collect()
    }

    /// An object with free-form keys (a map), in document order; a repeated key is refused.
    pub fn map(&self) -> Result<Vec<(&'a str, Val<'a>)>, ConfigError> {
        let Node::Object(members) = self.node else { return Err(self.wrong("an object")) };
        let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        if let Some(key) = keys.windows(2).find_map(|w| match w {
            [a, b] if a == b => Some(*a),
            _ => None,
        }) {
            return Err(self.member(key).error(format!("duplicate field `{key}`")));
        }
        Ok(members.iter().map(|(k, node)| (k.as_str(), self.at(node))).collect())
    }

    /// An object whose members must be among `fields` (at most 64: every configuration object
    /// has fewer than 16), each at most once.
    pub fn object(&self, fields: &[&str]) -> Result<Obj<'a>, ConfigError> {
        let Node::Object(members) = self.node else { return Err(self.wrong("an object")) };
        let mut seen = 0u64;
        for (k, node) in members {
            let Some(i) = fields.iter().position(|f| f == k) else {
                let expected: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
                return Err(self.at(node).error(format!("unknown field `{k}`, expected one of {}", expected.join(", "))));
            };
            let bit = 1u64.checked_shl(i as u32).unwrap_or(0);
            if seen & bit != 0 {
                return Err(self.at(node).error(format!("duplicate field `{k}`")));
            }
            seen |= bit;
        }
        Ok(Obj { at: *self, members })
    }

    /// The first member named `key` (for errors about a member).
    fn member(&self, key: &str) -> Val<'a> {
        match self.node {
            Node::Object(members) => members.iter().find(|(k, _)| k == key).map_or(*self, |(_, n)| self.at(n)),
            _ => *self,
        }
    }
}

/// An object whose member names were checked; members are read by name.
pub struct Obj<'a> {
    at: Val<'a>,
    members: &'a [(String, Node)],
}

impl<'a> Obj<'a> {
    /// A member, `None` when absent or `null`. (Out of line: every typed read calls it, and a
    /// copy inlined in each would cost more than the reader's own code.)
    #[inline(never)]
    pub fn get(&self, key: &str) -> Option<Val<'a>> {
        let (_, node) = self.members.iter().find(|(k, _)| k == key)?;
        (!matches!(node, Node::Null)).then(|| self.at.at(node))
    }

    /// A member that must be there (else the error names this object).
    pub fn req(&self, key: &str) -> Result<Val<'a>, ConfigError> {
        self.get(key).ok_or_else(|| self.at.error(format!("missing field `{key}`")))
    }

    /// An optional member read by `f`.
    pub fn opt<T>(&self, key: &str, f: impl FnOnce(&Val<'a>) -> Result<T, ConfigError>) -> Result<Option<T>, ConfigError> {
        self.get(key).map(|v| f(&v)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn read(json: &str) -> Node {
        parse(json.as_bytes()).unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn paths_and_messages() {
        let n = read(r#"{"a":{"b":[1,"x",-3,2.5]},"c":null,"d":true}"#);
        let root = Val::root(&n);
        let o = root.object(&["a", "c", "d"]).unwrap();
        assert!(o.get("c").is_none(), "null is absent");
        assert!(o.opt("d", Val::bool).unwrap().unwrap());
        let items = o.req("a").unwrap().object(&["b"]).unwrap().req("b").unwrap().array().unwrap();
        assert_eq!(items[0].u32().unwrap(), 1);
        let e = items[1].u32().unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("a.b[1]", r#"invalid type: string "x", expected u32"#));
        assert_eq!(items[2].u64().unwrap_err().message, "invalid value: integer `-3`, expected u64");
        assert_eq!(items[2].i64().unwrap(), -3);
        assert_eq!(items[3].f64().unwrap(), 2.5);
        assert!(items[3].u64().unwrap_err().message.contains("floating point `2.5`"));
        let e = o.req("zz").unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("", "missing field `zz`"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_and_repeated_members_are_refused_with_their_path() {
        let n = read(r#"{"a":{"x":1,"y":2}}"#);
        let a = Val::root(&n).object(&["a"]).unwrap().req("a").unwrap();
        let e = a.object(&["x"]).err().unwrap();
        assert_eq!(e.field, "a.y");
        assert!(e.message.starts_with("unknown field `y`, expected one of `x`"), "{}", e.message);
        let n = read(r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(Val::root(&n).object(&["a", "b"]).err().unwrap().field, "a");
        let n = read(r#"{"m":{"k":1,"j":2,"k":3}}"#);
        let m = Val::root(&n).object(&["m"]).unwrap().req("m").unwrap();
        let e = m.map().unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("m.k", "duplicate field `k`"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn choices_and_syntax_errors() {
        let n = read(r#""sliding""#);
        let e = Val::root(&n).choice(&[("count", 0), ("time", 1)]).unwrap_err();
        assert_eq!(e.message, "unknown variant `sliding`, expected one of `count`, `time`");
        for bad in ["", "{", "{} {}", "[1,]"] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert_eq!(e.field, "", "{bad}");
        }
        assert!(parse(b"{} x").unwrap_err().message.contains("trailing characters"));
    }
}
