//! Fuzz target `jsonrpc_response`: see `mcp_warden_fuzz::jsonrpc_response` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::jsonrpc_response(data));
