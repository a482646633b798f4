//! Fuzz target `degrade`: see `mcp_warden_fuzz::degrade` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::degrade(data));
