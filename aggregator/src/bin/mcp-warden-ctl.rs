//! `mcp-warden-ctl`: see [`mcp_warden_aggregator::ctl`].

fn main() -> std::process::ExitCode {
    mcp_warden_aggregator::ctl::main()
}
