//! Fuzz target `learn_tools`: see `mcp_warden_fuzz::learn_tools_target` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::learn_tools_target(data));
