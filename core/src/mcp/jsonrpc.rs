//! JSON-RPC 2.0 messages, read only as deeply as the sidecar needs: ids, methods, a tool's
//! name, an error's code and a tool result's `isError` flag. Everything else is skipped without
//! being built in memory.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// Error codes that mean the agent made a mistake (parse error, invalid request, unknown
/// method, invalid params): never held against a server.
pub const AGENT_ERROR_CODES: [i64; 4] = [-32700, -32600, -32601, -32602];

/// One message of an agent's request body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestEntry {
    /// `None` for notifications (and for a `null` id, which JSON-RPC discourages).
    pub id: Option<Value>,
    pub method: Option<String>,
    /// `params.name` of a `tools/call` (or `prompts/get`).
    pub name: Option<String>,
}

/// An agent's POST body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedRequest {
    pub entries: Vec<RequestEntry>,
    pub batch: bool,
}

impl ParsedRequest {
    /// Ids the server owes an answer for.
    pub fn expected_ids(&self) -> impl Iterator<Item = &Value> {
        self.entries.iter().filter_map(|e| e.id.as_ref())
    }
}

/// Why a request body could not be read (the agent's problem; the server will say so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParseError(pub String);

/// Reads a request body. With `names_from_headers` (the request carried `Mcp-Method`), only ids
/// are taken from the body.
pub fn parse_request(body: &[u8], names_from_headers: bool) -> Result<ParsedRequest, RequestParseError> {
    let body = utf8(body).map_err(|e| RequestParseError(e.to_string()))?;
    let first = body.bytes().find(|b| !b.is_ascii_whitespace());
    let err = |e: serde_json::Error| RequestParseError(e.to_string());
    match (first, names_from_headers) {
        (Some(b'['), false) => {
            let msgs: Vec<Object<RequestMsg>> = serde_json::from_str(body).map_err(err)?;
            Ok(ParsedRequest { entries: msgs.into_iter().map(|Object(m)| m.into_entry()).collect(), batch: true })
        }
        (Some(b'['), true) => {
            let msgs: Vec<Object<IdOnly>> = serde_json::from_str(body).map_err(err)?;
            let entries = msgs.into_iter().map(|Object(m)| RequestEntry { id: non_null(m.id), ..Default::default() });
            Ok(ParsedRequest { entries: entries.collect(), batch: true })
        }
        (_, false) => {
            let msg: RequestMsg = serde_json::from_str(body).map_err(err)?;
            Ok(ParsedRequest { entries: vec![msg.into_entry()], batch: false })
        }
        (_, true) => {
            let msg: IdOnly = serde_json::from_str(body).map_err(err)?;
            Ok(ParsedRequest { entries: vec![RequestEntry { id: non_null(msg.id), ..Default::default() }], batch: false })
        }
    }
}

/// JSON text is UTF-8. serde_json checks that only in strings it keeps, not in those it skips, so
/// a body with broken UTF-8 in a skipped part would otherwise pass for JSON.
fn utf8(body: &[u8]) -> Result<&str, serde_json::Error> {
    std::str::from_utf8(body).map_err(|e| de::Error::custom(format_args!("not UTF-8: {e}")))
}

/// A batch's message, which must be a JSON object: serde's derived structs also take an array
/// (fields by position), so `[[1]]` would read as a message with id 1.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn non_null(v: Option<Value>) -> Option<Value> {
    v.filter(|v| !v.is_null())
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<Value>,
}

#[derive(Deserialize)]
struct RequestMsg {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<NameProbe>,
}

impl RequestMsg {
    fn into_entry(self) -> RequestEntry {
        RequestEntry { id: non_null(self.id), method: self.method, name: self.params.and_then(|p| p.0) }
    }
}

/// `params.name` if params is an object with a string `name`; anything else is skipped.
struct NameProbe(Option<String>);

impl<'de> Deserialize<'de> for NameProbe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NameProbe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON-RPC params")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NameProbe, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "name" && name.is_none() {
                        // Read whole, whatever its type: a swallowed error would leave the
                        // reader inside the value (refusing good JSON, accepting bad).
                        name = match map.next_value::<Value>()? {
                            Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(NameProbe(name))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NameProbe, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NameProbe(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NameProbe, E> {
                Ok(NameProbe(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// One message of a server's answer, reduced to what decides its health.
#[derive(Debug, Deserialize, Default)]
pub struct ResponseMsg {
    #[serde(default)]
    pub jsonrpc: Option<String>,
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default)]
    pub method: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    pub result: Option<ResultProbe>,
    #[serde(default, deserialize_with = "present")]
    pub error: Option<ErrorProbe>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The `isError` flag of a result, whatever else the result holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResultProbe {
    pub is_error: bool,
}

impl<'de> Deserialize<'de> for ResultProbe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultProbe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC result")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResultProbe, A::Error> {
                let mut is_error = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "isError" {
                        // Read whole, whatever its type (see `NameProbe`).
                        is_error = map.next_value::<Value>()? == Value::Bool(true);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ResultProbe { is_error })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ResultProbe, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ResultProbe::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<ResultProbe, E> {
                Ok(ResultProbe::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ResultProbe, E> {
                Ok(ResultProbe::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ResultProbe, E> {
                Ok(ResultProbe::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ResultProbe, E> {
                Ok(ResultProbe::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ResultProbe, E> {
                Ok(ResultProbe::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<ResultProbe, E> {
                Ok(ResultProbe::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The code of a JSON-RPC error object.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub struct ErrorProbe {
    pub code: i64,
}

/// One server message, or several (a batch answer).
pub enum ResponseBody {
    One(ResponseMsg),
    Many(Vec<ResponseMsg>),
}

/// Reads a server's JSON body (a message or a batch of them).
pub fn parse_response(body: &[u8]) -> Result<ResponseBody, serde_json::Error> {
    let body = utf8(body)?;
    let first = body.bytes().find(|b| !b.is_ascii_whitespace());
    if first == Some(b'[') {
        let msgs: Vec<Object<ResponseMsg>> = serde_json::from_str(body)?;
        Ok(ResponseBody::Many(msgs.into_iter().map(|Object(m)| m).collect()))
    } else {
        serde_json::from_str(body).map(ResponseBody::One)
    }
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;
    use serde_json::json;

    #[wasm_bindgen_test(unsupported = test)]
    fn reads_a_tool_call() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"name":"not this","x":[1,2]},"_meta":{"progressToken":1}}}"#;
        let p = parse_request(body, false).unwrap();
        assert!(!p.batch);
        assert_eq!(
            p.entries,
            vec![RequestEntry { id: Some(json!(7)), method: Some("tools/call".into()), name: Some("echo".into()) }]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reads_batches_notifications_and_string_ids() {
        let body = br#"[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":null,"method":"x","params":[1,2]}]"#;
        let p = parse_request(body, false).unwrap();
        assert!(p.batch);
        assert_eq!(p.expected_ids().collect::<Vec<_>>(), vec![&json!("a")]);
        assert_eq!(p.entries[1].method.as_deref(), Some("notifications/initialized"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn with_method_header_only_ids_are_read() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}"#;
        let p = parse_request(body, true).unwrap();
        assert_eq!(p.entries, vec![RequestEntry { id: Some(json!(3)), method: None, name: None }]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_request_bodies_are_errors_not_panics() {
        for body in [&b""[..], b"{", b"null", b"42", b"[1,2]", b"{\"id\":{\"a\":1}", b"\xff\xfe"] {
            let _ = parse_request(body, false);
            let _ = parse_request(body, true);
        }
        assert!(parse_request(b"{", false).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn invalid_utf8_in_a_skipped_string() {
        // Fuzz regressions (fuzz/regressions/jsonrpc_{request,response}/invalid-utf8-in-a-skipped-string):
        // bytes that are not UTF-8 inside a skipped value were taken for JSON.
        let req = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"capabilities\":{\"x\xc4\":{}}}}";
        assert!(parse_request(req, false).is_err());
        assert!(parse_request(req, true).is_err());
        let resp = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"caf\xc3\"}]}}";
        assert!(parse_response(resp).is_err());
        assert!(parse_response("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"text\":\"caf\u{e9}\"}}".as_bytes()).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn is_error_not_a_bool() {
        // Fuzz regression (fuzz/regressions/jsonrpc_response/is-error-not-a-bool): a failed read
        // of `isError` was ignored with the reader left inside the value, so bad JSON passed and
        // a well-formed answer whose `isError` is an object or array was refused.
        assert!(parse_response(br#"{"jsonrpc":"2.0","id":7,"result":{"isError": truu, "isError": true}}"#).is_err());
        for (body, want) in [
            (&br#"{"jsonrpc":"2.0","id":1,"result":{"isError":{"a":[1]},"content":[]}}"#[..], false),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"isError":[true]}}"#, false),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"isError":"true"}}"#, false),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"isError":{},"isError":true}}"#, true),
        ] {
            let Ok(ResponseBody::One(m)) = parse_response(body) else { panic!("refused {}", String::from_utf8_lossy(body)) };
            assert_eq!(m.result, Some(ResultProbe { is_error: want }));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn name_not_a_string() {
        // Fuzz regression (fuzz/regressions/jsonrpc_request/name-not-a-string): same as
        // `is_error_not_a_bool`, for `params.name`.
        let p = parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"name":{"first":"a"},"k":2}}"#, false)
            .unwrap();
        assert_eq!(p.entries, vec![RequestEntry { id: Some(json!(1)), method: Some("x".into()), name: None }]);
        assert!(parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"name":[1],"name":"b"}}"#, false).is_ok());
        assert!(parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"name":nul}}"#, false).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn batch_message_that_is_an_array() {
        // Fuzz regression (fuzz/regressions/jsonrpc_request/batch-message-that-is-an-array): a
        // batch element that is an array read as a message, its items taken as fields by position.
        assert!(parse_request(b"[[\r-32000\r]\r\r]", false).is_err());
        assert!(parse_request(b"[[-32000]]", true).is_err());
        assert!(parse_response(br#"[["2.0",1,null,{}]]"#).is_err());
        let p = parse_request(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, true).unwrap();
        assert_eq!(p.expected_ids().collect::<Vec<_>>(), vec![&json!(1)]);
        assert!(matches!(parse_response(br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#), Ok(ResponseBody::Many(m)) if m.len() == 1));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn probes_results_and_errors() {
        let ResponseBody::One(m) =
            parse_response(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}],"isError":true}}"#)
                .unwrap()
        else {
            panic!("expected one message")
        };
        assert_eq!(m.result, Some(ResultProbe { is_error: true }));
        let ResponseBody::One(m) = parse_response(br#"{"jsonrpc":"2.0","id":1,"result":null}"#).unwrap() else {
            panic!("expected one message")
        };
        assert_eq!(m.result, Some(ResultProbe { is_error: false }));
        let ResponseBody::Many(ms) =
            parse_response(br#"[{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"boom"}}]"#).unwrap()
        else {
            panic!("expected a batch")
        };
        assert_eq!(ms[0].error, Some(ErrorProbe { code: -32603 }));
        assert!(ms[0].result.is_none());
    }
}
