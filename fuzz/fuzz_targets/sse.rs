//! Fuzz target `sse`: see `mcp_warden_fuzz::sse` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::sse(data));
