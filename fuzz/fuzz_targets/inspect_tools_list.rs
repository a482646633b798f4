//! Fuzz target `inspect_tools_list`: see `mcp_warden_fuzz::inspect_tools_list` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::inspect_tools_list(data));
