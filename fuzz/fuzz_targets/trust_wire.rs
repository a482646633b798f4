//! Fuzz target `trust_wire`: see `mcp_warden_fuzz::trust_wire` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::trust_wire(data));
