//! The one place that talks to the proxy: thin, fallible wrappers over the proxy-wasm ABI.
//!
//! The SDK's own `hostcalls` panic on any status they did not expect (a header set after the
//! headers left, a buffer that is gone), and a panic aborts the VM. These wrappers call the ABI
//! directly and turn every status into a [`HostError`], so the data path can never panic here.

use mcp_warden_core::breaker::{SharedStore, StoreError};
use proxy_wasm::types::{BufferType, MapType, Status};
use std::fmt;
use std::ptr::{null, null_mut};

/// A status the host returned instead of Ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            s if s == Status::NotFound as u32 => "not found",
            s if s == Status::BadArgument as u32 => "bad argument",
            s if s == Status::SerializationFailure as u32 => "serialization failure",
            s if s == Status::ParseFailure as u32 => "parse failure",
            s if s == Status::Empty as u32 => "empty",
            s if s == Status::CasMismatch as u32 => "cas mismatch",
            s if s == Status::InternalFailure as u32 => "internal failure",
            _ => "host error",
        };
        write!(f, "{name} (status {})", self.0)
    }
}

// Status codes of the proxy-wasm ABI, taken from the SDK's definition (never renumbered by hand).
const OK: u32 = Status::Ok as u32;
const NOT_FOUND: u32 = Status::NotFound as u32;
const CAS_MISMATCH: u32 = Status::CasMismatch as u32;

pub type HostResult<T> = Result<T, HostError>;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

fn status(s: u32) -> HostResult<()> {
    if s == OK {
        Ok(())
    } else {
        Err(HostError(s))
    }
}

/// Takes ownership of bytes the host allocated through the SDK's exported allocator.
///
/// # Safety
/// `data`/`size` must come from a successful host call that returned an allocation.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// Nanoseconds since the Unix epoch, by the proxy's clock.
pub fn now_ns() -> u64 {
    let mut ns = 0u64;
    // SAFETY: plain out-parameter.
    let s = unsafe { proxy_get_current_time_nanoseconds(&mut ns) };
    if s == OK {
        ns
    } else {
        0
    }
}

/// Milliseconds since the Unix epoch, by the proxy's clock.
pub fn now_ms() -> u64 {
    let mut ns = 0u64;
    // SAFETY: plain out-parameter.
    let s = unsafe { proxy_get_current_time_nanoseconds(&mut ns) };
    if s == OK {
        ns / 1_000_000
    } else {
        0
    }
}

/// Up to `max` bytes of a buffer from `start`.
pub fn get_buffer(kind: BufferType, start: usize, max: usize) -> HostResult<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-parameters; ownership of the returned allocation is taken right after.
    let s = unsafe { proxy_get_buffer_bytes(kind as u32, start, max, &mut data, &mut size) };
    match s {
        OK => Ok(unsafe { owned(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        s => Err(HostError(s)),
    }
}

/// Replaces `size` bytes of a buffer at `start` with `value`.
pub fn set_buffer(kind: BufferType, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
    // SAFETY: pointers into live slices.
    status(unsafe { proxy_set_buffer_bytes(kind as u32, start, size, value.as_ptr(), value.len()) })
}

/// A header's value (lossy UTF-8), or `None`.
pub fn header(map: MapType, name: &str) -> Option<String> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-parameters; ownership taken right after.
    let s = unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size) };
    if s != OK {
        return None;
    }
    let bytes = unsafe { owned(data, size) };
    Some(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Every header of a map, in order (lossy UTF-8); empty if the map is unavailable.
pub fn headers(map: MapType) -> Vec<(String, String)> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-parameters; ownership taken right after.
    let s = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    if s != OK {
        return Vec::new();
    }
    let bytes = unsafe { owned(data, size) };
    parse_header_pairs(&bytes).unwrap_or_default()
}

/// The ABI's serialised header map: count, (key len, value len) pairs, NUL-terminated strings.
fn parse_header_pairs(b: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(256));
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = b.get(at..at + k)?;
        at += k + 1;
        let value = b.get(at..at + v)?;
        at += v + 1;
        out.push((String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(value).into_owned()));
    }
    Some(out)
}

/// Sets (replaces) a header.
pub fn set_header(map: MapType, name: &str, value: &str) -> HostResult<()> {
    // SAFETY: pointers into live strings.
    status(unsafe { proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// Removes a header.
pub fn remove_header(map: MapType, name: &str) -> HostResult<()> {
    // SAFETY: pointer into a live string.
    status(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A property's raw bytes (`path` as the proxy's dotted segments).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    // The ABI takes the segments NUL-separated.
    let mut serialized = Vec::with_capacity(64);
    for seg in path {
        serialized.extend_from_slice(seg.as_bytes());
        serialized.push(0);
    }
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-parameters; ownership taken right after.
    let s = unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    (s == OK).then(|| unsafe { owned(data, size) })
}

/// An integer property (8-byte little endian), or 0.
pub fn property_u64(path: &[&str]) -> u64 {
    property(path)
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// A string property, or empty.
pub fn property_string(path: &[&str]) -> String {
    property(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Answers the request from the filter itself.
pub fn send_response(status_code: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    // The ABI's header map: count, then (key len, value len) pairs, then NUL-terminated strings.
    let mut map = Vec::with_capacity(64 + body.len() / 8);
    map.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (k, v) in headers {
        map.extend_from_slice(&(k.len() as u32).to_le_bytes());
        map.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in headers {
        map.extend_from_slice(k.as_bytes());
        map.push(0);
        map.extend_from_slice(v.as_bytes());
        map.push(0);
    }
    let details = b"mcp_warden_degraded";
    // SAFETY: pointers into live buffers.
    status(unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            if body.is_empty() { null() } else { body.as_ptr() },
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

/// Proxy-wasm metric kinds.
#[derive(Debug, Clone, Copy)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
}

/// Defines (or finds) a metric by name.
pub fn define_metric(kind: MetricKind, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    // SAFETY: pointer into a live string, out-parameter.
    status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds to a counter; metrics are best effort and never fail a request.
pub fn increment(id: u32, by: i64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_increment_metric(id, by) };
}

/// Sets a gauge.
pub fn record(id: u32, value: u64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_record_metric(id, value) };
}

/// The proxy's shared data, seen through the core's store trait.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
        // SAFETY: out-parameters; ownership taken right after.
        let s = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
        match s {
            OK => Ok((Some(unsafe { owned(data, size) }), Some(cas))),
            NOT_FOUND => Ok((None, None)),
            s => Err(StoreError::Host(HostError(s).to_string())),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        // SAFETY: pointers into live buffers.
        let s = unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0))
        };
        match s {
            OK => Ok(()),
            CAS_MISMATCH => Err(StoreError::CasMismatch),
            s => Err(StoreError::Host(HostError(s).to_string())),
        }
    }
}

/// Lets the paused request go on (the ABI's stream type 0 is the request).
pub fn resume_request() -> HostResult<()> {
    // SAFETY: plain value.
    status(unsafe { proxy_continue_stream(0) })
}

/// Makes `context_id` the context later calls act on (a root's timer working for a request).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    // SAFETY: plain value.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// How often `on_tick` runs in this root context.
pub fn set_tick_period(period: std::time::Duration) -> HostResult<()> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: plain value.
    status(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Makes an HTTP call to `cluster`; its answer arrives in `on_http_call_response` of the context
/// that made it. The SDK's own function is used because it registers the call with the SDK's
/// dispatcher (which routes the answer); a call it cannot make is an error, never a panic for
/// the statuses Envoy returns (bad argument, internal failure).
pub fn dispatch(cluster: &str, headers: &[(String, String)], body: Option<&[u8]>, timeout_ms: u64) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let timeout = std::time::Duration::from_millis(timeout_ms.clamp(1, u64::from(u32::MAX)));
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout).map_err(|e| format!("{e:?}"))
}

/// Request headers.
pub const REQUEST: MapType = MapType::HttpRequestHeaders;
/// Response headers.
pub const RESPONSE: MapType = MapType::HttpResponseHeaders;
/// Request body.
pub const REQUEST_BODY: BufferType = BufferType::HttpRequestBody;
/// Response body.
pub const RESPONSE_BODY: BufferType = BufferType::HttpResponseBody;

/// What a request's stream asks of the proxy: the one host trait the HTTP context talks
/// through, implemented once by [`Proxy`] over the fallible ABI calls above.
pub trait Host {
    fn now_ms(&self) -> u64;
    /// Every header of a map (request, response, or a call's answer).
    fn headers(&self, map: MapType) -> Vec<(String, String)>;
    fn set_header(&self, map: MapType, name: &str, value: &str) -> HostResult<()>;
    fn remove_header(&self, map: MapType, name: &str) -> HostResult<()>;
    fn body(&self, kind: BufferType, size: usize) -> HostResult<Vec<u8>>;
    fn replace_body(&self, kind: BufferType, size: usize, with: &[u8]) -> HostResult<()>;
    /// Envoy's response flags and code details.
    fn reply_details(&self) -> (u64, String);
    fn response_flags(&self) -> u64;
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> HostResult<()>;
    fn resume_request(&self) -> HostResult<()>;
    fn dispatch(&self, cluster: &str, headers: &[(String, String)], body: Option<&[u8]>, timeout_ms: u64) -> Result<u32, String>;
    fn set_effective_context(&self, context_id: u32) -> HostResult<()>;
    fn increment(&self, counter: u32);
}

/// The proxy itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proxy;

impl Host for Proxy {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn headers(&self, map: MapType) -> Vec<(String, String)> {
        headers(map)
    }
    fn set_header(&self, map: MapType, name: &str, value: &str) -> HostResult<()> {
        set_header(map, name, value)
    }
    fn remove_header(&self, map: MapType, name: &str) -> HostResult<()> {
        remove_header(map, name)
    }
    fn body(&self, kind: BufferType, size: usize) -> HostResult<Vec<u8>> {
        get_buffer(kind, 0, size)
    }
    fn replace_body(&self, kind: BufferType, size: usize, with: &[u8]) -> HostResult<()> {
        set_buffer(kind, 0, size, with)
    }
    fn reply_details(&self) -> (u64, String) {
        (property_u64(&["response", "flags"]), property_string(&["response", "code_details"]))
    }
    fn response_flags(&self) -> u64 {
        property_u64(&["response", "flags"])
    }
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> HostResult<()> {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        send_response(u32::from(status), &headers, body)
    }
    fn resume_request(&self) -> HostResult<()> {
        resume_request()
    }
    fn dispatch(&self, cluster: &str, headers: &[(String, String)], body: Option<&[u8]>, timeout_ms: u64) -> Result<u32, String> {
        dispatch(cluster, headers, body, timeout_ms)
    }
    fn set_effective_context(&self, context_id: u32) -> HostResult<()> {
        set_effective_context(context_id)
    }
    fn increment(&self, counter: u32) {
        increment(counter, 1)
    }
}
