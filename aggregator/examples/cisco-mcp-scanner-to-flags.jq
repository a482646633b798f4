# Cisco AI Defense MCP Scanner (`mcp-scanner --format raw`) -> mcp-warden FlagRequest, one per line.
# Usage: jq -c --arg server <cluster name> -f cisco-mcp-scanner-to-flags.jq scan.json
# One flag per unsafe tool and analyzer; the scanner's HIGH/MEDIUM/LOW map to high/medium/low
# (it has no critical: escalate by hand, or post a critical flag for findings you trust).
.scan_results[] | select(.is_safe == false) | .tool_name as $tool
| .findings | to_entries[] | select(.value.severity | IN("HIGH", "MEDIUM", "LOW"))
| .key as $analyzer | .value as $f
| [$f.threats.items[]?.items[]?] as $subs
| { server: $server,
    severity: ($f.severity | ascii_downcase),
    rule: ("cisco-mcp-scanner/\($analyzer)/\($subs[0].sub_technique_id // "finding")"),
    tool: $tool,
    description: ($subs | map(.sub_technique_name) | join("; "))[:2000] }
