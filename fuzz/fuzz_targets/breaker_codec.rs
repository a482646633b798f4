//! Fuzz target `breaker_codec`: see `mcp_warden_fuzz::breaker_codec` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::breaker_codec(data));
