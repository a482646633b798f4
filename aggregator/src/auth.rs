//! Bearer tokens and roles: who may call what. The tokens file is read once at start.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// What a token's holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Envoy sidecars: report signals.
    Sidecar,
    /// People or systems that rate servers and vouch for other raters.
    Rater,
    /// Security scanners: flag findings.
    Scanner,
    /// Operators: quarantine, release, read the audit log; rate and flag too; the pre-trusted
    /// raters of the web of trust.
    Operator,
    /// Dashboards: read only.
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Rater => "rater",
            Role::Scanner => "scanner",
            Role::Operator => "operator",
            Role::Reader => "reader",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller: the token's name is its identity (the rater, the sidecar, the
/// operator named in the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    token: String,
    name: String,
    role: Role,
}

/// A tokens file the aggregator refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensError(pub String);

impl fmt::Display for TokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid tokens file: {}", self.0)
    }
}

impl std::error::Error for TokensError {}

/// The tokens the aggregator accepts.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Principal)>,
}

const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Parses `{"tokens":[{"token":"...","name":"...","role":"..."}]}`. Tokens must be unique and
    /// at least 16 characters; a name may have several tokens (rotation), all of one role.
    pub fn from_json(bytes: &[u8]) -> Result<Tokens, TokensError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawTokens =
            serde_path_to_error::deserialize(de).map_err(|e| TokensError(format!("field `{}`: {}", e.path(), e.inner())))?;
        let mut entries: Vec<(Vec<u8>, Principal)> = Vec::with_capacity(raw.tokens.len());
        for (i, t) in raw.tokens.into_iter().enumerate() {
            let at = |f: &str, m: String| TokensError(format!("field `tokens[{i}].{f}`: {m}"));
            if t.token.len() < MIN_TOKEN_LEN || t.token.chars().any(|c| !c.is_ascii_graphic()) {
                return Err(at("token", format!("must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces")));
            }
            crate::validate::name(&t.name).map_err(|m| at("name", m))?;
            if entries.iter().any(|(tok, _)| tok == t.token.as_bytes()) {
                return Err(at("token", "duplicate token".into()));
            }
            if let Some((_, p)) = entries.iter().find(|(_, p)| p.name == t.name && p.role != t.role) {
                return Err(at("role", format!("name `{}` already has role {}; one name, one role", t.name, p.role)));
            }
            entries.push((t.token.into_bytes(), Principal { name: t.name, role: t.role }));
        }
        if entries.is_empty() {
            return Err(TokensError("field `tokens`: at least one token is required".into()));
        }
        Ok(Tokens { entries })
    }

    /// The holder of `token`. Compares against every token in constant time per byte, so the
    /// time taken does not tell how much of a guess was right.
    pub fn lookup(&self, token: &str) -> Option<&Principal> {
        let mut found = None;
        for (t, p) in &self.entries {
            if ct_eq(t, token.as_bytes()) {
                found = Some(p);
            }
        }
        found
    }

    /// Names of the operators: the pre-trusted raters of the web of trust.
    pub fn operators(&self) -> BTreeSet<String> {
        self.entries.iter().filter(|(_, p)| p.role == Role::Operator).map(|(_, p)| p.name.clone()).collect()
    }

    /// How many distinct names hold tokens of `role` (a name's rotated tokens count once).
    pub fn names(&self, role: Role) -> usize {
        self.entries.iter().filter(|(_, p)| p.role == role).map(|(_, p)| p.name.as_str()).collect::<BTreeSet<_>>().len()
    }

    /// How many tokens each role has (for the start-up log line).
    pub fn count(&self, role: Role) -> usize {
        self.entries.iter().filter(|(_, p)| p.role == role).count()
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let t = Tokens::from_json(
            br#"{"tokens":[{"token":"aaaaaaaaaaaaaaaa","name":"ops","role":"operator"},
                          {"token":"bbbbbbbbbbbbbbbb","name":"ops","role":"operator"},
                          {"token":"cccccccccccccccc","name":"s1","role":"sidecar"}]}"#,
        )
        .unwrap();
        assert_eq!(t.lookup("aaaaaaaaaaaaaaaa").unwrap().name, "ops");
        assert_eq!(t.lookup("cccccccccccccccc").unwrap().role, Role::Sidecar);
        assert!(t.lookup("cccccccccccccccd").is_none());
        assert!(t.lookup("").is_none());
        assert_eq!(t.operators().len(), 1);
        assert_eq!((t.names(Role::Operator), t.count(Role::Operator), t.names(Role::Sidecar), t.names(Role::Rater)), (1, 2, 1, 0));
    }

    #[test]
    fn refuses_bad_files() {
        let cases: &[(&str, &str)] = &[
            (r#"{"tokens":[]}"#, "at least one token"),
            (r#"{"tokens":[{"token":"short","name":"a","role":"reader"}]}"#, "`tokens[0].token`: must be at least 16"),
            (r#"{"tokens":[{"token":"aaaaaaaaaaaaaaaa","name":"a","role":"admin"}]}"#, "`tokens[0].role`: unknown variant"),
            (r#"{"tokens":[{"token":"aaaaaaaaaaaaaaaa","name":"a b","role":"reader"}]}"#, "`tokens[0].name`"),
            (
                r#"{"tokens":[{"token":"aaaaaaaaaaaaaaaa","name":"a","role":"reader"},{"token":"aaaaaaaaaaaaaaaa","name":"b","role":"reader"}]}"#,
                "`tokens[1].token`: duplicate token",
            ),
            (
                r#"{"tokens":[{"token":"aaaaaaaaaaaaaaaa","name":"a","role":"reader"},{"token":"bbbbbbbbbbbbbbbb","name":"a","role":"operator"}]}"#,
                "`tokens[1].role`: name `a` already has role reader",
            ),
            (r#"{"tokens":[],"x":1}"#, "`x`: unknown field"),
        ];
        for (json, want) in cases {
            let e = Tokens::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
