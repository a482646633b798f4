//! Fuzz target `jsonrpc_request`: see `mcp_warden_fuzz::jsonrpc_request` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::jsonrpc_request(data));
