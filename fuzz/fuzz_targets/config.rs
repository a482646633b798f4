//! Fuzz target `config`: see `mcp_warden_fuzz::config` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::config(data));
