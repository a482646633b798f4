//! Every hook Envoy requires, exported by name and handed to [`crate::filter`] and
//! [`crate::config`] inside `catch_unwind`.
//!
//! Envoy resolves each hook by name when it loads the module and refuses it if one is missing.
//! A panic unwinding into Envoy would abort the whole proxy: every hook catches it, logs it and,
//! on a request, answers it degraded ([`crate::filter::Filter::on_panic`]).

#![allow(clippy::missing_safety_doc)]

use crate::abi::{
    ConfigEnvoyPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, ABI_VERSION, BODY_CONTINUE, BODY_STOP_NO_BUFFER,
    HEADERS_CONTINUE, HEADERS_STOP_ITERATION, LOG_CRITICAL, TRAILERS_CONTINUE,
};
use crate::config::FilterConfig;
use crate::filter::Filter;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

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
