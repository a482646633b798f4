//! Envoy's dynamic-module ABI (Envoy 1.40, ABI v0.2.0): the few types and callbacks this module
//! uses, declared by hand, and every hook Envoy requires, exported here and handed to
//! [`crate::filter`] and [`crate::config`] inside `catch_unwind`.
//!
//! Envoy resolves each hook by name when it loads the module and refuses it if one is missing.
//! A panic unwinding into Envoy would abort the whole proxy: every hook catches it, logs it and,
//! on a request, answers it degraded ([`crate::filter::Filter::on_panic`]).
//!
//! x86-64 and aarch64 pass a two-word struct (`EnvoyBuffer`, `ModuleBuffer`) by value in two
//! registers, exactly as the C header's `envoy_dynamic_module_type_*_buffer` structs.

#![allow(clippy::missing_safety_doc)]

use crate::config::FilterConfig;
use crate::filter::Filter;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What `program_init` answers: Envoy 1.40 logs "Dynamic module ABI version v0.2.0 matched." for
/// it. Any other string only warns, and a layout mismatch would then corrupt memory silently.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// A byte range Envoy owns (valid for the duration of the hook or callback that gave it).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };

    /// # Safety
    /// Only while the hook or callback that filled it is running.
    pub unsafe fn bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.length)
        }
    }
}

/// A byte range the module owns, lent to Envoy for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(b: &[u8]) -> Self {
        ModuleBuffer { ptr: b.as_ptr(), length: b.len() }
    }
    /// A null buffer: `set_header` removes the header.
    pub const NULL: ModuleBuffer = ModuleBuffer { ptr: std::ptr::null(), length: 0 };
}

/// A header the module lends Envoy (local replies, callouts).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl ModuleHeader {
    pub fn of(k: &str, v: &str) -> Self {
        ModuleHeader { key_ptr: k.as_ptr(), key_length: k.len(), value_ptr: v.as_ptr(), value_length: v.len() }
    }
}

/// A header Envoy owns (callout answers, header listings).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

pub type FilterEnvoyPtr = *mut c_void;
pub type ConfigEnvoyPtr = *mut c_void;
pub type SchedulerPtr = *mut c_void;

// envoy_dynamic_module_type_http_header_type
pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;
// envoy_dynamic_module_type_http_body_type
pub const RECEIVED_REQUEST_BODY: u32 = 0;
pub const BUFFERED_REQUEST_BODY: u32 = 1;
pub const RECEIVED_RESPONSE_BODY: u32 = 2;
pub const BUFFERED_RESPONSE_BODY: u32 = 3;
// envoy_dynamic_module_type_on_http_filter_*_headers_status
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
// envoy_dynamic_module_type_on_http_filter_*_body_status
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_AND_BUFFER: u32 = 1;
pub const BODY_STOP_NO_BUFFER: u32 = 3;
// envoy_dynamic_module_type_on_http_filter_*_trailers_status
pub const TRAILERS_CONTINUE: u32 = 0;
// envoy_dynamic_module_type_log_level
pub const LOG_DEBUG: u32 = 1;
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const LOG_CRITICAL: u32 = 5;
// envoy_dynamic_module_type_attribute_id
pub const ATTR_RESPONSE_CODE_DETAILS: u32 = 16;
pub const ATTR_RESPONSE_FLAGS: u32 = 17;
// envoy_dynamic_module_type_metrics_result / http_callout_init_result / http_callout_result
pub const METRICS_SUCCESS: u32 = 0;
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
pub const CALLOUT_SUCCESS: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        gauge_id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoyPtr, header_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result: *mut EnvoyHeader,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);

    pub fn envoy_dynamic_module_callback_http_get_body_size(filter: FilterEnvoyPtr, body_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: FilterEnvoyPtr, body_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoyPtr,
        body_type: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_append_body(filter: FilterEnvoyPtr, body_type: u32, data: ModuleBuffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(filter: FilterEnvoyPtr, body_type: u32, bytes: usize) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    pub fn envoy_dynamic_module_callback_http_filter_continue_encoding(filter: FilterEnvoyPtr);

    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterEnvoyPtr,
        attribute: u32,
        result: *mut u64,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: FilterEnvoyPtr) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler: SchedulerPtr, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: ConfigEnvoyPtr) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: SchedulerPtr, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: SchedulerPtr);

    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
}

// ---------------------------------------------------------------------------------------------
// Hooks

/// Runs `f`, turning a panic into `fallback` (the panic hook already logged it at critical).
fn guarded<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            crate::host::log(LOG_CRITICAL, &format!("mcp-warden: a panic in {what} was caught; Envoy keeps running"));
            fallback
        }
    }
}

/// The filter behind a module pointer.
///
/// # Safety
/// `p` is what `on_http_filter_new` returned and `on_http_filter_destroy` has not run yet.
unsafe fn filter<'a>(p: *const c_void) -> Option<&'a mut Filter> {
    (p as *mut Filter).as_mut()
}

/// The configuration behind a module pointer (same contract, for the config hooks).
unsafe fn config<'a>(p: *const c_void) -> Option<&'a FilterConfig> {
    (p as *const FilterConfig).as_ref()
}

/// Runs a request hook; a panic answers the request degraded instead.
fn request_hook(envoy: FilterEnvoyPtr, p: *const c_void, what: &str, stop: u32, f: impl FnOnce(&mut Filter) -> u32) -> u32 {
    let Some(filter) = (unsafe { filter(p) }) else { return 0 };
    let ptr = filter as *mut Filter;
    match catch_unwind(AssertUnwindSafe(|| f(filter))) {
        Ok(status) => status,
        Err(_) => {
            crate::host::log(LOG_CRITICAL, &format!("mcp-warden: a panic in {what} was caught; answering the request degraded"));
            // SAFETY: the filter outlives the hook; the closure that panicked no longer borrows it.
            let filter = unsafe { &mut *ptr };
            guarded("the panic answer", stop, || filter.on_panic(envoy, stop))
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    guarded("program_init", std::ptr::null(), || {
        crate::host::install_logger();
        ABI_VERSION.as_ptr()
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded("http_filter_config_new", std::ptr::null(), || {
        match FilterConfig::new(envoy, name.bytes(), config.bytes()) {
            Some(c) => Box::into_raw(Box::new(c)) as *const c_void,
            // Null makes Envoy refuse the filter configuration (the reason was logged).
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(p: *const c_void) {
    guarded("http_filter_config_destroy", (), || {
        if !p.is_null() {
            drop(Box::from_raw(p as *mut FilterConfig));
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(p: *const c_void, envoy: FilterEnvoyPtr) -> *const c_void {
    guarded("http_filter_new", std::ptr::null(), || match config(p) {
        Some(c) => Box::into_raw(Box::new(Filter::new(c.shared(), envoy))) as *const c_void,
        None => std::ptr::null(),
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(p: *const c_void) {
    guarded("http_filter_destroy", (), || {
        if !p.is_null() {
            drop(Box::from_raw(p as *mut Filter));
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    p: *const c_void,
    end_of_stream: bool,
) -> u32 {
    request_hook(envoy, p, "request_headers", HEADERS_STOP_ITERATION, |f| f.on_request_headers(envoy, end_of_stream))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoyPtr,
    p: *const c_void,
    end_of_stream: bool,
) -> u32 {
    request_hook(envoy, p, "request_body", BODY_STOP_NO_BUFFER, |f| f.on_request_body(envoy, end_of_stream))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(envoy: FilterEnvoyPtr, p: *const c_void) -> u32 {
    request_hook(envoy, p, "request_trailers", TRAILERS_CONTINUE, |f| f.on_request_trailers(envoy))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    p: *const c_void,
    end_of_stream: bool,
) -> u32 {
    let Some(f) = filter(p) else { return HEADERS_CONTINUE };
    guarded("response_headers", HEADERS_CONTINUE, || f.on_response_headers(envoy, end_of_stream))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: FilterEnvoyPtr,
    p: *const c_void,
    end_of_stream: bool,
) -> u32 {
    let Some(f) = filter(p) else { return BODY_CONTINUE };
    guarded("response_body", BODY_CONTINUE, || f.on_response_body(envoy, end_of_stream))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_envoy: FilterEnvoyPtr, _p: *const c_void) -> u32 {
    TRAILERS_CONTINUE
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(envoy: FilterEnvoyPtr, p: *const c_void) {
    let Some(f) = filter(p) else { return };
    guarded("stream_complete", (), || f.on_stream_complete(envoy))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(envoy: FilterEnvoyPtr, p: *const c_void, event_id: u64) {
    let Some(f) = filter(p) else { return };
    guarded("http_filter_scheduled", (), || f.on_scheduled(envoy, event_id))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy: FilterEnvoyPtr,
    p: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    let Some(f) = filter(p) else { return };
    guarded("http_callout_done", (), || {
        let answer = crate::host::CalloutAnswer::read(result, headers, headers_size, body_chunks, body_chunks_size);
        f.on_callout_done(envoy, callout_id, answer)
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _envoy: ConfigEnvoyPtr,
    p: *const c_void,
    event_id: u64,
) {
    let Some(c) = config(p) else { return };
    guarded("http_filter_config_scheduled", (), || c.on_scheduled(event_id))
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _envoy: ConfigEnvoyPtr,
    p: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    let Some(c) = config(p) else { return };
    guarded("http_filter_config_http_callout_done", (), || {
        let answer = crate::host::CalloutAnswer::read(result, headers, headers_size, body_chunks, body_chunks_size);
        c.on_callout_done(callout_id, answer)
    })
}

// Streamed callouts and watermarks: required by Envoy, unused by mcp-warden.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: FilterEnvoyPtr,
    _p: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: FilterEnvoyPtr,
    _p: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: FilterEnvoyPtr,
    _p: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_envoy: FilterEnvoyPtr, _p: *const c_void, _stream_id: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: FilterEnvoyPtr,
    _p: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: FilterEnvoyPtr,
    _p: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: FilterEnvoyPtr,
    _p: *const c_void,
) {
}
