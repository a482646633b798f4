//! The one module that calls Envoy: safe wrappers over the callbacks declared in [`crate::abi`],
//! scoped to one request (`Stream`) or to the filter configuration (`ConfigHost`).
//!
//! Envoy's pointers are only valid inside the hook that passed them, so a `Stream` is built at
//! the top of each hook and never stored.

use crate::abi::{self, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, ModuleBuffer, ModuleHeader};
use std::ptr::{null_mut};

/// Logs through Envoy's logger (component `dynamic_modules`).
pub fn log(level: u32, message: &str) {
    // SAFETY: the buffer lives for the call.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// Forwards the `log` crate to Envoy's logger, and panics to it at critical.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // SAFETY: a plain value.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(level_of(metadata.level())) }
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            log(level_of(record.level()), &record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn level_of(l: log::Level) -> u32 {
    match l {
        log::Level::Error => abi::LOG_ERROR,
        log::Level::Warn => abi::LOG_WARN,
        log::Level::Info => abi::LOG_INFO,
        log::Level::Debug | log::Level::Trace => abi::LOG_DEBUG,
    }
}

static LOGGER: EnvoyLogger = EnvoyLogger;

/// Installs the logger and a panic hook that logs the panic at critical (once per process).
pub fn install_logger() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
        std::panic::set_hook(Box::new(|info| {
            log(abi::LOG_CRITICAL, &format!("mcp-warden: panic: {info}"));
        }));
    }
}

/// Milliseconds since the Unix epoch (the module's own clock: Envoy's is not in the ABI).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Request and response of one stream, during one hook.
#[derive(Clone, Copy)]
pub struct Stream(pub FilterEnvoyPtr);

/// Which header map.
#[derive(Clone, Copy)]
pub enum Map {
    Request,
    Response,
}

impl Map {
    fn kind(self) -> u32 {
        match self {
            Map::Request => abi::REQUEST_HEADER,
            Map::Response => abi::RESPONSE_HEADER,
        }
    }
}

impl Stream {
    /// A header's first value (lossy UTF-8).
    pub fn header(&self, map: Map, name: &str) -> Option<String> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: out-parameter; the value is copied before the hook returns.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.0,
                map.kind(),
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                null_mut(),
            )
        };
        found.then(|| String::from_utf8_lossy(unsafe { out.bytes() }).into_owned())
    }

    /// Every header of a map (lossy UTF-8).
    pub fn headers(&self, map: Map) -> Vec<(String, String)> {
        // SAFETY: Envoy fills exactly `n` entries; values are copied before the hook returns.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_headers_size(self.0, map.kind());
            if n == 0 {
                return Vec::new();
            }
            let empty = EnvoyHeader { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };
            let mut raw = vec![empty; n];
            if !abi::envoy_dynamic_module_callback_http_get_headers(self.0, map.kind(), raw.as_mut_ptr()) {
                return Vec::new();
            }
            raw.iter()
                .map(|h| {
                    let k = EnvoyBuffer { ptr: h.key_ptr, length: h.key_length };
                    let v = EnvoyBuffer { ptr: h.value_ptr, length: h.value_length };
                    (String::from_utf8_lossy(k.bytes()).into_owned(), String::from_utf8_lossy(v.bytes()).into_owned())
                })
                .collect()
        }
    }

    /// Sets (replaces) a header; false if Envoy refused (e.g. the headers already left).
    pub fn set_header(&self, map: Map, name: &str, value: &str) -> bool {
        // SAFETY: buffers live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.0,
                map.kind(),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// Removes a header (a null value).
    pub fn remove_header(&self, map: Map, name: &str) -> bool {
        // SAFETY: buffer lives for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(self.0, map.kind(), ModuleBuffer::of(name.as_bytes()), ModuleBuffer::NULL)
        }
    }

    /// Makes Envoy pick the route again: a header set by a dynamic module does not, by itself.
    pub fn clear_route_cache(&self) {
        // SAFETY: plain call on a live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.0) }
    }

    fn body_of(&self, kind: u32, out: &mut Vec<u8>) {
        // SAFETY: Envoy fills exactly `n` slices; they are copied before the hook returns.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind);
            if n == 0 {
                return;
            }
            let mut chunks = vec![EnvoyBuffer::EMPTY; n];
            if abi::envoy_dynamic_module_callback_http_get_body_chunks(self.0, kind, chunks.as_mut_ptr()) {
                for c in &chunks {
                    out.extend_from_slice(c.bytes());
                }
            }
        }
    }

    /// Bytes of the request body so far: what Envoy buffered for the filter, then this frame.
    pub fn request_body_size(&self) -> usize {
        // SAFETY: plain calls on a live stream.
        unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_size(self.0, abi::BUFFERED_REQUEST_BODY)
                + abi::envoy_dynamic_module_callback_http_get_body_size(self.0, abi::RECEIVED_REQUEST_BODY)
        }
    }

    /// The whole request body held so far (buffered, then this frame).
    pub fn request_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.request_body_size());
        self.body_of(abi::BUFFERED_REQUEST_BODY, &mut out);
        self.body_of(abi::RECEIVED_REQUEST_BODY, &mut out);
        out
    }

    /// This frame of the response body.
    pub fn response_frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.body_of(abi::RECEIVED_RESPONSE_BODY, &mut out);
        out
    }

    /// Bytes of the response body held so far (buffered, then this frame).
    pub fn response_body_size(&self) -> usize {
        // SAFETY: plain calls on a live stream.
        unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_size(self.0, abi::BUFFERED_RESPONSE_BODY)
                + abi::envoy_dynamic_module_callback_http_get_body_size(self.0, abi::RECEIVED_RESPONSE_BODY)
        }
    }

    /// The whole response body held so far (buffered, then this frame).
    pub fn response_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.response_body_size());
        self.body_of(abi::BUFFERED_RESPONSE_BODY, &mut out);
        self.body_of(abi::RECEIVED_RESPONSE_BODY, &mut out);
        out
    }

    /// Replaces the first `replace` bytes of the response body held so far with `with`.
    pub fn replace_response_body(&self, replace: usize, with: &[u8]) {
        let held = self.response_body_size();
        // What stays after the replaced part (usually nothing: the flow replaces what it held).
        let rest = if replace < held { self.response_body().split_off(replace) } else { Vec::new() };
        // SAFETY: plain calls on a live stream; the data lives for each call.
        unsafe {
            for kind in [abi::BUFFERED_RESPONSE_BODY, abi::RECEIVED_RESPONSE_BODY] {
                let n = abi::envoy_dynamic_module_callback_http_get_body_size(self.0, kind);
                if n > 0 {
                    abi::envoy_dynamic_module_callback_http_drain_body(self.0, kind, n);
                }
            }
            for part in [with, rest.as_slice()] {
                if !part.is_empty() {
                    abi::envoy_dynamic_module_callback_http_append_body(self.0, abi::RECEIVED_RESPONSE_BODY, ModuleBuffer::of(part));
                }
            }
        }
    }

    /// Answers the request from the filter.
    pub fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let mut raw: Vec<ModuleHeader> = headers.iter().map(|(k, v)| ModuleHeader::of(k, v)).collect();
        // SAFETY: every buffer lives for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details.as_bytes()),
            )
        }
    }

    /// Lets a request stopped in an earlier hook go on.
    pub fn continue_request(&self) {
        // SAFETY: plain call on a live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    /// Lets a response stopped in an earlier hook go on.
    pub fn continue_response(&self) {
        // SAFETY: plain call on a live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_encoding(self.0) }
    }

    /// Envoy's `response.code_details` (empty when unknown).
    pub fn response_code_details(&self) -> String {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: out-parameter, copied before the hook returns.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, abi::ATTR_RESPONSE_CODE_DETAILS, &mut out)
        };
        if ok {
            String::from_utf8_lossy(unsafe { out.bytes() }).into_owned()
        } else {
            String::new()
        }
    }

    /// Envoy's `response.flags` (0 when unknown).
    pub fn response_flags(&self) -> u64 {
        let mut v = 0u64;
        // SAFETY: out-parameter.
        let ok = unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, abi::ATTR_RESPONSE_FLAGS, &mut v) };
        if ok {
            v
        } else {
            0
        }
    }

    /// Adds to a counter defined at configuration time; stats never fail a request.
    pub fn increment(&self, id: Option<usize>, by: u64) {
        if let Some(id) = id {
            // SAFETY: plain values on a live stream.
            let _ = unsafe { abi::envoy_dynamic_module_callback_http_filter_increment_counter(self.0, id, null_mut(), 0, by) };
        }
    }

    /// Sets a gauge defined at configuration time.
    pub fn set_gauge(&self, id: Option<usize>, value: u64) {
        if let Some(id) = id {
            // SAFETY: plain values on a live stream.
            let _ = unsafe { abi::envoy_dynamic_module_callback_http_filter_set_gauge(self.0, id, null_mut(), 0, value) };
        }
    }

    /// Sends a request to `cluster`; the answer comes back in `on_callout_done` with the id.
    pub fn callout(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64) -> Option<u64> {
        let start = abi::envoy_dynamic_module_callback_http_filter_http_callout;
        // SAFETY: the stream is live for the hook that calls this.
        unsafe { callout(start, self.0, cluster, headers, body, timeout_ms) }
    }
}

/// Envoy's two callout entry points (a stream's, a configuration's): the same arguments after
/// the owner.
type StartCallout<P> = unsafe extern "C" fn(P, *mut u64, ModuleBuffer, *mut ModuleHeader, usize, ModuleBuffer, u64) -> u32;

/// Starts a callout through `start` on `owner`; the callout's id, or `None` if Envoy refused.
///
/// # Safety
/// `owner` must be live for the call.
unsafe fn callout<P>(start: StartCallout<P>, owner: P, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64) -> Option<u64> {
    let mut raw: Vec<ModuleHeader> = headers.iter().map(|(k, v)| ModuleHeader::of(k, v)).collect();
    let mut id = 0u64;
    // SAFETY: every buffer lives for the call; `owner` is live (the caller's promise).
    let r = unsafe { start(owner, &mut id, ModuleBuffer::of(cluster.as_bytes()), raw.as_mut_ptr(), raw.len(), ModuleBuffer::of(body), timeout_ms) };
    (r == abi::CALLOUT_INIT_SUCCESS).then_some(id)
}

/// The answer to a callout, copied out of Envoy's buffers.
#[derive(Debug, Default)]
pub struct CalloutAnswer {
    /// False when Envoy could not complete the call (reset, answer past the buffer limit).
    pub ok: bool,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CalloutAnswer {
    /// Copies what Envoy passed to a callout-done hook.
    ///
    /// # Safety
    /// The pointers and sizes are those of the running hook.
    pub unsafe fn read(
        result: u32,
        headers: *const EnvoyHeader,
        headers_size: usize,
        chunks: *const EnvoyBuffer,
        chunks_size: usize,
    ) -> Self {
        let mut a = CalloutAnswer { ok: result == abi::CALLOUT_SUCCESS, ..Default::default() };
        if !headers.is_null() {
            for h in std::slice::from_raw_parts(headers, headers_size) {
                let k = EnvoyBuffer { ptr: h.key_ptr, length: h.key_length };
                let v = EnvoyBuffer { ptr: h.value_ptr, length: h.value_length };
                a.headers.push((String::from_utf8_lossy(k.bytes()).into_owned(), String::from_utf8_lossy(v.bytes()).into_owned()));
            }
        }
        if !chunks.is_null() {
            for c in std::slice::from_raw_parts(chunks, chunks_size) {
                a.body.extend_from_slice(c.bytes());
            }
        }
        a
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The filter configuration's side of Envoy (main thread).
#[derive(Clone, Copy)]
pub struct ConfigHost(pub abi::ConfigEnvoyPtr);

// SAFETY: Envoy's config object outlives the module config that holds it; it is only called
// from the main thread (config hooks) or through the scheduler, which Envoy made for that.
unsafe impl Send for ConfigHost {}
unsafe impl Sync for ConfigHost {}

impl ConfigHost {
    /// Defines a counter (`dynamicmodulescustom.<name>`); `None` if Envoy refused.
    pub fn counter(&self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: buffer lives for the call; out-parameter.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(self.0, ModuleBuffer::of(name.as_bytes()), null_mut(), 0, &mut id)
        };
        (r == abi::METRICS_SUCCESS).then_some(id)
    }

    /// Defines a gauge; `None` if Envoy refused.
    pub fn gauge(&self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: buffer lives for the call; out-parameter.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(self.0, ModuleBuffer::of(name.as_bytes()), null_mut(), 0, &mut id)
        };
        (r == abi::METRICS_SUCCESS).then_some(id)
    }

    /// Sends a request to `cluster` from the main thread; the answer comes back in the config's
    /// `on_callout_done`.
    pub fn callout(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64) -> Option<u64> {
        let start = abi::envoy_dynamic_module_callback_http_filter_config_http_callout;
        // SAFETY: the configuration outlives the module config that holds this host.
        unsafe { callout(start, self.0, cluster, headers, body, timeout_ms) }
    }

    /// A scheduler that runs `on_scheduled` of the configuration on the main thread.
    pub fn scheduler(&self) -> Option<ConfigScheduler> {
        // SAFETY: plain call on the live config.
        let p = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!p.is_null()).then_some(ConfigScheduler(p))
    }
}

/// Envoy's main-thread scheduler of one filter configuration; may be committed from any thread.
pub struct ConfigScheduler(abi::SchedulerPtr);

// SAFETY: Envoy's scheduler is made to be committed from other threads (that is its purpose).
unsafe impl Send for ConfigScheduler {}
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    /// Asks Envoy to run the configuration's `on_scheduled(event)` on the main thread.
    pub fn commit(&self, event: u64) {
        // SAFETY: live until dropped.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event) }
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: created by scheduler_new, deleted once.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}
