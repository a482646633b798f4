//! `mcp-warden-ctl`: the operator's command line over the API (blocking HTTP with ureq).

use crate::views::{
    ApprovalAck, ApprovalsView, ApproveRequest, AuditPage, RevokeAck, RevokeRequest, AuditVerification, DecisionAck, ErrorBody, FlagAck, ProvisionalView, RatingAck,
    ServerDetail,
};
use clap::{Parser, Subcommand, ValueEnum};
use mcp_warden_core::trust::wire::{FlagRequest, QuarantineRequest, RatingRequest, ScoresDocument, Severity, Subject};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "mcp-warden-ctl", version, about = "Operator CLI of the mcp-warden trust aggregator")]
pub struct Cli {
    /// Aggregator base URL.
    #[arg(long, env = "MCP_WARDEN_URL", default_value = "http://127.0.0.1:8090", global = true)]
    pub url: String,
    /// Bearer token (operator for quarantine, release, admit and audit; rater or operator to rate;
    /// scanner or operator to flag; any role to read).
    #[arg(long, env = "MCP_WARDEN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the aggregator's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every server's score and state.
    Scores,
    /// One server: score, breakdown, quarantine, history, security events, flags, ratings.
    Server { server: String },
    /// Quarantine a server (operator).
    Quarantine {
        server: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a quarantined server (operator).
    Release {
        server: String,
        #[arg(long)]
        reason: String,
    },
    /// Admit a server the sidecars have not agreed on (operator): it is tracked and published
    /// from now on, and what sidecars reported of it meanwhile counts.
    Admit {
        server: String,
        #[arg(long)]
        reason: String,
    },
    /// Servers fewer sidecar credentials than the admission quorum named (not tracked yet).
    Provisional,
    /// Tool changes sidecars hold out of `tools/list` until cleared, and the approvals in force.
    Held {
        #[arg(long)]
        server: Option<String>,
    },
    /// Approve a held tool definition by its new fingerprint (operator): every sidecar then
    /// lets the change through and pins it.
    Approve {
        server: String,
        /// The held change's new fingerprint (32 hex digits, as `held` shows it).
        fingerprint: String,
        /// The tool (taken from the held change when left out).
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Revoke a tool definition by its fingerprint (operator): an approval of it for SERVER is
    /// withdrawn and every sidecar strips it until it is approved again.
    Revoke {
        server: String,
        /// The definition's fingerprint (32 hex digits, as `held` shows it).
        fingerprint: String,
        #[arg(long)]
        reason: String,
    },
    /// Rate a server (`rate SERVER VALUE`) or vouch for a rater (`rate --rater NAME VALUE`);
    /// VALUE in 0..1.
    Rate {
        #[arg(num_args = 1..=2, required = true, value_names = ["SERVER", "VALUE"])]
        args: Vec<String>,
        /// Vouch for this rater instead of rating a server.
        #[arg(long)]
        rater: Option<String>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Report a security finding (scanner or operator).
    Flag {
        server: String,
        #[arg(long, value_enum)]
        severity: SeverityArg,
        #[arg(long)]
        rule: String,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Post an MCP scanner's findings as flags (scanner or operator): `flags import`.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// The audit log of quarantine decisions, newest first (operator); `audit verify` checks its
    /// hash chain (operator or reader).
    Audit {
        #[command(subcommand)]
        check: Option<AuditCommand>,
        #[arg(long)]
        server: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Download a consistent copy of the running aggregator's database (operator) and check it.
    Backup {
        /// The file to write (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Vet a server's tools offline with the filter's inspector (no aggregator needed); exit
    /// status 1 when a tool is flagged.
    Scan(crate::scan::ScanArgs),
    /// Install a backup as the database of a stopped aggregator (works on files; no token).
    Restore {
        /// The backup file (from `mcp-warden-ctl backup`).
        #[arg(long)]
        from: PathBuf,
        /// The aggregator's database file (its `--db`).
        #[arg(long)]
        db: PathBuf,
        /// Replace an existing database (its files are kept as `<db>.replaced-<ms>`).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the audit log's hash chain; exit status 1 at the first broken link.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum FlagsCommand {
    /// Read a scanner's report (FILE, `-` for stdin) and post one flag per finding; repeated
    /// imports within the dedup window are not counted again.
    Import {
        /// The report's format.
        #[arg(long, value_enum)]
        format: ScannerFormat,
        /// The server the report is about, as the aggregator names it (the Envoy cluster).
        #[arg(long)]
        server: String,
        /// Post the scanner's HIGH as `critical` (quarantines at once) instead of `high`.
        #[arg(long)]
        high_as_critical: bool,
        /// Skip findings below this severity (after the mapping).
        #[arg(long, value_enum, default_value = "low")]
        min_severity: SeverityArg,
        /// Print the flags as JSON lines instead of posting them (no token needed).
        #[arg(long)]
        dry_run: bool,
        file: PathBuf,
    },
}

/// Scanner report formats `flags import` reads.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScannerFormat {
    /// Cisco AI Defense MCP Scanner (`mcp-scanner --format raw`, PyPI `cisco-ai-mcp-scanner`).
    CiscoMcpScanner,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match run(&cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("mcp-warden-ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Percent-encodes one path segment (server names may hold `|`, as Istio cluster names do).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn new(cli: &Cli) -> Result<Client, String> {
        let token = cli.token.clone().ok_or("no token: pass --token or set MCP_WARDEN_TOKEN")?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Client { agent, base: cli.url.trim_end_matches('/').to_string(), token })
    }

    /// Sends the request; the answer's body if 2xx, else the aggregator's error message.
    fn call(&self, method: &str, path: &str, body: Option<&impl Serialize>) -> Result<String, String> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (_, Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            (_, None) => self.agent.post(&url).header("Authorization", &auth).send_empty(),
        };
        let mut res = res.map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = res.status();
        let text = res.body_mut().read_to_string().map_err(|e| format!("cannot read the answer from {url}: {e}"))?;
        if status.is_success() {
            Ok(text)
        } else {
            let msg = serde_json::from_str::<ErrorBody>(&text).map(|e| e.error).unwrap_or(text);
            Err(format!("{method} {path}: HTTP {}: {}", status.as_u16(), crate::text::escape(&msg)))
        }
    }

    /// POSTs without a body and returns the answer's bytes (a backup).
    fn post_for_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let mut res = self
            .agent
            .post(&url)
            .header("Authorization", &auth)
            .send_empty()
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = res.status();
        let bytes = res
            .body_mut()
            .with_config()
            .limit(MAX_BACKUP_BYTES)
            .read_to_vec()
            .map_err(|e| format!("cannot read the answer from {url}: {e}"))?;
        if status.is_success() {
            Ok(bytes)
        } else {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let msg = serde_json::from_str::<ErrorBody>(&text).map(|e| e.error).unwrap_or(text);
            Err(format!("POST {path}: HTTP {}: {}", status.as_u16(), crate::text::escape(&msg)))
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(T, String), String> {
        let text = self.call("GET", path, None::<&()>)?;
        Ok((parse(&text)?, text))
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<(T, String), String> {
        let text = self.call("POST", path, Some(body))?;
        Ok((parse(&text)?, text))
    }
}

/// The answer as the CLI renders it: every string escaped ([`crate::text`]), since everything
/// the CLI prints from an answer goes to a person's terminal.
fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("unexpected answer from the aggregator: {e}"))?;
    crate::text::escape_json(&mut v);
    serde_json::from_value(v).map_err(|e| format!("unexpected answer from the aggregator: {e}"))
}

/// UTC `YYYY-MM-DD HH:MM:SS` from milliseconds since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

fn state_str(s: mcp_warden_core::trust::wire::TrustState) -> &'static str {
    crate::store::state_str(s)
}

/// Largest backup `backup` accepts.
const MAX_BACKUP_BYTES: u64 = 4 << 30;

/// Writes the backup `bytes` to `out` through a `.partial` file that is checked first.
fn save_backup(bytes: &[u8], out: &std::path::Path, force: bool) -> Result<crate::backup::Report, String> {
    if out.exists() && !force {
        return Err(format!("{} exists (pass --force to replace it)", out.display()));
    }
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    let report = crate::backup::inspect(&partial).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        format!("the downloaded backup is not usable: {e}")
    })?;
    std::fs::rename(&partial, out).map_err(|e| format!("cannot rename {} to {}: {e}", partial.display(), out.display()))?;
    Ok(report)
}

/// Runs one command, writing its output to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), String> {
    if let Command::Scan(args) = &cli.command {
        let flagged = crate::scan::run(args, cli.json, out)?;
        return if flagged == 0 { Ok(()) } else { Err(format!("{flagged} tool(s) flagged")) };
    }
    if let Command::Restore { from, db, force } = &cli.command {
        let (report, kept) = crate::backup::restore(from, db, *force)?;
        let mut s = format!("restored {} as {}: {}\n", from.display(), db.display(), report.summary());
        for k in kept {
            let _ = writeln!(s, "kept the previous file as {}", k.display());
        }
        return out.write_all(s.as_bytes()).map_err(|e| e.to_string());
    }
    if let Command::Flags { command: FlagsCommand::Import { format, server, high_as_critical, min_severity, dry_run, file } } = &cli.command {
        let raw = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s).map_err(|e| format!("cannot read stdin: {e}"))?;
            s
        } else {
            std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
        };
        let report: serde_json::Value = serde_json::from_str(&raw).map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
        let conv = match format {
            ScannerFormat::CiscoMcpScanner => cisco_mcp_scanner_flags(&report, server, *high_as_critical, (*min_severity).into())?,
        };
        if *dry_run {
            let mut s = String::new();
            for f in &conv.flags {
                let _ = writeln!(s, "{}", serde_json::to_string(f).map_err(|e| e.to_string())?);
            }
            return out.write_all(s.as_bytes()).map_err(|e| e.to_string());
        }
        let client = Client::new(cli)?;
        return import_flags(&client, &conv, cli.json, out);
    }
    let client = Client::new(cli)?;
    let text = match &cli.command {
        Command::Scores => {
            let (doc, raw): (ScoresDocument, _) = client.get("/v1/scores")?;
            if cli.json {
                raw
            } else {
                let mut s = format!("version {} at {} UTC, {} servers\n", doc.version, utc(doc.generated_at_ms), doc.servers.len());
                let _ = writeln!(s, "{:<40} {:<11} {:>6} {:>6} {:>6} {:>6}  REASON", "SERVER", "STATE", "SCORE", "PERF", "SEC", "REP");
                for v in &doc.servers {
                    let b = &v.breakdown;
                    let _ = writeln!(
                        s,
                        "{:<40} {:<11} {:>6.3} {:>6.2} {:>6.2} {:>6.2}  {}",
                        v.server,
                        state_str(v.state),
                        v.score,
                        b.performance,
                        b.security,
                        b.reputation,
                        v.quarantine_reason.as_deref().unwrap_or("")
                    );
                }
                s
            }
        }
        Command::Server { server } => {
            let (d, raw): (ServerDetail, _) = client.get(&format!("/v1/servers/{}", encode_segment(server)))?;
            if cli.json {
                raw
            } else {
                server_summary(&d)
            }
        }
        Command::Quarantine { server, reason } => {
            let path = format!("/v1/servers/{}/quarantine", encode_segment(server));
            let (a, raw): (DecisionAck, _) = client.post(&path, &QuarantineRequest { reason: reason.clone() })?;
            if cli.json {
                raw
            } else {
                format!("quarantined `{}` (audit #{}); state {}, score {:.3}\n", a.server, a.audit_id, state_str(a.state), a.score)
            }
        }
        Command::Release { server, reason } => {
            let path = format!("/v1/servers/{}/release", encode_segment(server));
            let (a, raw): (DecisionAck, _) = client.post(&path, &QuarantineRequest { reason: reason.clone() })?;
            if cli.json {
                raw
            } else {
                format!("released `{}` (audit #{}); state {}, score {:.3}\n", a.server, a.audit_id, state_str(a.state), a.score)
            }
        }
        Command::Admit { server, reason } => {
            let path = format!("/v1/servers/{}/admit", encode_segment(server));
            let (a, raw): (DecisionAck, _) = client.post(&path, &QuarantineRequest { reason: reason.clone() })?;
            if cli.json {
                raw
            } else {
                format!("admitted `{}` (audit #{}); state {}, score {:.3}\n", a.server, a.audit_id, state_str(a.state), a.score)
            }
        }
        Command::Provisional => {
            let (v, raw): (ProvisionalView, _) = client.get("/v1/provisional")?;
            if cli.json {
                raw
            } else {
                let mut s = format!(
                    "{} provisional servers (a server is tracked once {} sidecar credentials name it, or an operator admits it)\n",
                    v.total, v.quorum
                );
                if !v.servers.is_empty() {
                    let _ = writeln!(s, "{:<40} {:<20} {:>6} {:>8}  NAMED BY", "SERVER", "LAST NAMED (UTC)", "CALLS", "FINDINGS");
                }
                for p in &v.servers {
                    let _ = writeln!(
                        s,
                        "{:<40} {:<20} {:>6} {:>8}  {}",
                        p.server,
                        utc(p.last_ms),
                        p.held_calls,
                        p.held_findings,
                        p.named_by.join(", ")
                    );
                }
                s
            }
        }
        Command::Held { server } => {
            let path = match server {
                Some(s) => format!("/v1/approvals?server={}", encode_segment(s)),
                None => "/v1/approvals".to_string(),
            };
            let (v, raw): (ApprovalsView, _) = client.get(&path)?;
            if cli.json {
                raw
            } else {
                held_summary(&v)
            }
        }
        Command::Approve { server, fingerprint, tool, reason } => {
            let path = format!("/v1/servers/{}/approvals", encode_segment(server));
            let req = ApproveRequest { fingerprint: fingerprint.clone(), tool: tool.clone(), reason: reason.clone() };
            let (a, raw): (ApprovalAck, _) = client.post(&path, &req)?;
            if cli.json {
                raw
            } else {
                let tool = a.tool.as_deref().map(|t| format!(" of tool `{t}`")).unwrap_or_default();
                format!("approved {}{tool} on `{}` (audit #{}); published in scores version {}\n", a.fingerprint, a.server, a.audit_id, a.version)
            }
        }
        Command::Revoke { server, fingerprint, reason } => {
            let path = format!("/v1/servers/{}/revoke", encode_segment(server));
            let req = RevokeRequest { fingerprint: fingerprint.clone(), reason: reason.clone() };
            let (a, raw): (RevokeAck, _) = client.post(&path, &req)?;
            if cli.json {
                raw
            } else {
                let withdrawn = if a.approval_withdrawn { "approval withdrawn, " } else { "" };
                format!(
                    "revoked {} on `{}` ({withdrawn}stripped on every sidecar; audit #{}); published in scores version {}\n",
                    a.fingerprint, a.server, a.audit_id, a.version
                )
            }
        }
        Command::Rate { args, rater, comment } => {
            let (subject, value) = match (rater, args.as_slice()) {
                (Some(r), [v]) => (Subject::Rater(r.clone()), v),
                (Some(_), _) => return Err("with --rater NAME give only the VALUE".into()),
                (None, [s, v]) => (Subject::Server(s.clone()), v),
                (None, _) => return Err("give SERVER VALUE, or --rater NAME VALUE".into()),
            };
            let value: f64 = value.parse().map_err(|_| format!("VALUE must be a number in 0..1, got {value:?}"))?;
            let req = RatingRequest { subject, value, comment: comment.clone() };
            let (a, raw): (RatingAck, _) = client.post("/v1/ratings", &req)?;
            if cli.json {
                raw
            } else {
                let what = match &a.subject {
                    Subject::Server(s) => format!("server `{s}`"),
                    Subject::Rater(r) => format!("rater `{r}` (vouch)"),
                };
                format!("`{}` rated {what} {} (your standing {:.2})\n", a.rater, a.value, a.rater_standing)
            }
        }
        Command::Flag { server, severity, rule, tool, description } => {
            let req = FlagRequest {
                server: server.clone(),
                severity: (*severity).into(),
                rule: rule.clone(),
                tool: tool.clone(),
                description: description.clone(),
            };
            let (a, raw): (FlagAck, _) = client.post("/v1/flags", &req)?;
            if cli.json {
                raw
            } else {
                let counted = if a.counted { "counted" } else { "already counted in the dedup window" };
                format!("flag #{} on `{}`: {counted}; state {}, score {:.3}\n", a.id, a.server, state_str(a.state), a.score)
            }
        }
        Command::Restore { .. } | Command::Flags { .. } | Command::Scan(_) => String::new(),
        Command::Backup { out: file, force } => {
            let bytes = client.post_for_bytes("/v1/admin/backup")?;
            let report = save_backup(&bytes, file, *force)?;
            format!("backup written to {}: {}\n", file.display(), report.summary())
        }
        Command::Audit { check: Some(AuditCommand::Verify), .. } => {
            let (v, raw): (AuditVerification, _) = client.get("/v1/audit/verify")?;
            if let Some(b) = &v.broken {
                if cli.json {
                    let _ = writeln!(out, "{raw}");
                }
                return Err(format!("audit log broken at entry #{}: {} ({} entries before it verified)", b.id, b.reason, v.entries));
            }
            match (&v.head, cli.json) {
                (_, true) => raw,
                (Some(h), false) => format!("audit log intact: {} entries, head #{} {}\n", v.entries, h.id, h.hash),
                (None, false) => "audit log intact: empty\n".to_string(),
            }
        }
        Command::Audit { check: None, server, limit } => {
            let mut path = format!("/v1/audit?limit={limit}");
            if let Some(s) = server {
                let _ = write!(path, "&server={}", encode_segment(s));
            }
            let (page, raw): (AuditPage, _) = client.get(&path)?;
            if cli.json {
                raw
            } else {
                let mut s = format!("{:>5}  {:<19}  {:<16} {:<15} {:<30} {:>6}  REASON\n", "ID", "TIME (UTC)", "ACTOR", "ACTION", "SERVER", "SCORE");
                for e in &page.entries {
                    let _ = writeln!(
                        s,
                        "{:>5}  {:<19}  {:<16} {:<15} {:<30} {:>6.3}  {}",
                        e.id,
                        utc(e.at_ms),
                        e.actor,
                        e.action.as_str(),
                        e.server,
                        e.score,
                        e.reason
                    );
                }
                s
            }
        }
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `held`: what waits for an operator, then what was approved.
fn held_summary(v: &ApprovalsView) -> String {
    let mut s = format!("{} held change(s) waiting for an operator\n", v.held.len());
    if !v.held.is_empty() {
        let _ = writeln!(s, "{:<30} {:<24} {:<32} {:>7}  {:<19}  WHY", "SERVER", "TOOL", "NEW FINGERPRINT", "REPORTS", "LAST (UTC)");
        for h in &v.held {
            let why = h.why.as_deref().map(|w| w.rsplit_once("): ").map_or(w, |(_, r)| r)).unwrap_or("");
            let _ = writeln!(
                s,
                "{:<30} {:<24} {:<32} {:>7}  {:<19}  {}",
                h.server,
                h.tool.as_deref().unwrap_or("-"),
                h.fingerprint,
                h.reports,
                utc(h.last_ms),
                why
            );
        }
        let _ = writeln!(s, "approve one with: mcp-warden-ctl approve SERVER FINGERPRINT --reason \"...\"");
    }
    let _ = writeln!(s, "{} approval(s) in force", v.approvals.len());
    for a in &v.approvals {
        let _ = writeln!(
            s,
            "  {:<30} {:<24} {}  by {} at {} UTC: {}",
            a.server,
            a.tool.as_deref().unwrap_or("-"),
            a.fingerprint,
            a.approved_by,
            utc(a.at_ms),
            a.reason
        );
    }
    s
}

/// The flags converted from one scanner report, and how many findings were left out.
#[derive(Debug, Default, PartialEq)]
pub struct ConvertedFlags {
    pub flags: Vec<FlagRequest>,
    /// Analyzer results that are not findings (`SAFE`, `UNKNOWN`) or under `--min-severity`.
    pub skipped: usize,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Cisco AI Defense MCP Scanner `--format raw` (checked against 4.8.7): `scan_results[]`, each
/// with `tool_name` and `findings.<analyzer>` = `{severity: HIGH|MEDIUM|LOW|SAFE|UNKNOWN,
/// threat_summary, threat_names, mcp_taxonomies: [{aisubtech, aisubtech_name, ...}]}` (older
/// versions: `threats.items[].items[]` with `sub_technique_id`/`sub_technique_name`). One flag
/// per tool and analyzer with a finding: HIGH/MEDIUM/LOW map to high/medium/low (HIGH to critical
/// with `high_as_critical`); the rule is `cisco-mcp-scanner/<analyzer>/<sub-technique ids,
/// sorted>` so a re-scan reports the same rule and is deduplicated.
pub fn cisco_mcp_scanner_flags(report: &serde_json::Value, server: &str, high_as_critical: bool, min: Severity) -> Result<ConvertedFlags, String> {
    use serde_json::Value;
    let results = report
        .get("scan_results")
        .and_then(Value::as_array)
        .ok_or("not a `mcp-scanner --format raw` report: no `scan_results` array")?;
    let mut conv = ConvertedFlags::default();
    for (i, r) in results.iter().enumerate() {
        let Some(findings) = r.get("findings").and_then(Value::as_object) else { continue };
        let tool = r.get("tool_name").and_then(Value::as_str).map(|t| cut(t, crate::validate::MAX_ID));
        // Analyzers in name order, so the flags come out the same for the same report.
        let mut analyzers: Vec<(&String, &Value)> = findings.iter().collect();
        analyzers.sort_by(|a, b| a.0.cmp(b.0));
        for (analyzer, f) in analyzers {
            let severity = match f.get("severity").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
                Some("HIGH") if high_as_critical => Severity::Critical,
                Some("HIGH") => Severity::High,
                Some("MEDIUM") => Severity::Medium,
                Some("LOW") => Severity::Low,
                Some("SAFE" | "UNKNOWN") | None => {
                    conv.skipped += 1;
                    continue;
                }
                Some(other) => return Err(format!("scan_results[{i}].findings.{analyzer}.severity: unknown severity {other:?}")),
            };
            if severity < min {
                conv.skipped += 1;
                continue;
            }
            // (id, name) of each sub-technique: the current `mcp_taxonomies`, or the older `threats`.
            let mut subs: Vec<(String, String)> = Vec::new();
            for t in f.get("mcp_taxonomies").and_then(Value::as_array).into_iter().flatten() {
                if let Some(id) = t.get("aisubtech").and_then(Value::as_str) {
                    subs.push((id.to_string(), t.get("aisubtech_name").and_then(Value::as_str).unwrap_or("").to_string()));
                }
            }
            let old = f.pointer("/threats/items").and_then(Value::as_array).into_iter().flatten();
            for t in old.flat_map(|t| t.get("items").and_then(Value::as_array).into_iter().flatten()) {
                if let Some(id) = t.get("sub_technique_id").and_then(Value::as_str) {
                    subs.push((id.to_string(), t.get("sub_technique_name").and_then(Value::as_str).unwrap_or("").to_string()));
                }
            }
            subs.sort();
            subs.dedup();
            let ids: Vec<&str> = subs.iter().map(|(id, _)| id.as_str()).collect();
            let rule = if ids.is_empty() { format!("cisco-mcp-scanner/{analyzer}") } else { format!("cisco-mcp-scanner/{analyzer}/{}", ids.join(",")) };
            let mut description = f.get("threat_summary").and_then(Value::as_str).unwrap_or("").to_string();
            let named: Vec<String> = subs.iter().filter(|(_, n)| !n.is_empty()).map(|(id, n)| format!("{id} {n}")).collect();
            if !named.is_empty() {
                if !description.is_empty() {
                    description.push_str(" | ");
                }
                description.push_str(&named.join("; "));
            }
            let description = (!description.is_empty()).then(|| cut(&description, crate::validate::MAX_TEXT));
            conv.flags.push(FlagRequest { server: server.to_string(), severity, rule: cut(&rule, crate::validate::MAX_ID), tool: tool.clone(), description });
        }
    }
    Ok(conv)
}

/// Posts the converted flags one by one; stops at the first error (posting again is safe: a
/// finding already counted within the dedup window adds no penalty).
fn import_flags(client: &Client, conv: &ConvertedFlags, json: bool, out: &mut dyn Write) -> Result<(), String> {
    let (mut counted, mut repeated) = (0, 0);
    let mut last = None;
    for (n, f) in conv.flags.iter().enumerate() {
        let (a, raw): (FlagAck, _) =
            client.post("/v1/flags", f).map_err(|e| format!("{e} (after {n} of {} flags were posted)", conv.flags.len()))?;
        let line = if json {
            format!("{raw}\n")
        } else {
            let tool = f.tool.as_deref().map(|t| format!(" tool {t}")).unwrap_or_default();
            let how = if a.counted { "counted" } else { "already counted" };
            format!("flag #{} {} {}{tool}: {how}\n", a.id, f.severity.as_str(), f.rule)
        };
        out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        if a.counted {
            counted += 1;
        } else {
            repeated += 1;
        }
        last = Some(a);
    }
    if !json {
        let after = last.map(|a| format!("; `{}` now {}, score {:.3}", a.server, state_str(a.state), a.score)).unwrap_or_default();
        let s = format!(
            "{} flags posted ({counted} counted, {repeated} already counted), {} results skipped{after}\n",
            conv.flags.len(),
            conv.skipped
        );
        out.write_all(s.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn server_summary(d: &ServerDetail) -> String {
    let mut s = String::new();
    let b = &d.breakdown;
    let _ = writeln!(s, "server    {}", d.server);
    let _ = writeln!(s, "state     {} (score {:.3})", state_str(d.state), d.score);
    let _ = writeln!(s, "why       {}", b.explanation);
    if let Some(q) = &d.quarantine {
        let how = if q.automatic { "automatically" } else { "by an operator" };
        let _ = writeln!(s, "quarantined {how} (`{}`) at {} UTC: {}", q.by, utc(q.since_ms), q.reason);
    }
    if let Some(r) = d.released_ms {
        let _ = writeln!(s, "released  at {} UTC; automatic quarantine armed: {}", utc(r), d.auto_quarantine_armed);
    }
    let t = &d.traffic;
    let latency = t.latency_mean_ms.map(|m| format!(", mean latency {m:.0} ms")).unwrap_or_default();
    let _ = writeln!(s, "traffic   {} ok, {} failed, {} slow{latency}", t.success, t.failures, t.slow);
    let r = &d.ratings;
    let _ = writeln!(
        s,
        "ratings   {} (reputation {:.2}, rater weight {:.2}, {} from unknown raters)",
        r.count, r.reputation, r.rating_weight, r.unknown_raters
    );
    for x in r.raters.iter().take(10) {
        let _ = writeln!(s, "          {:<24} {:.2} (standing {:.2})", x.rater, x.value, x.standing);
    }
    if !d.security_events.is_empty() {
        let _ = writeln!(s, "security events (newest first):");
        for e in d.security_events.iter().take(10) {
            let tool = e.tool.as_deref().map(|t| format!(" tool {t}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "          {} {:<8} {}{tool} x{} (first by {})",
                utc(e.first_ms),
                e.severity.as_str(),
                e.rule,
                e.reports,
                e.reported_by
            );
        }
    }
    if !d.flags.is_empty() {
        let _ = writeln!(s, "flags (newest first):");
        for f in d.flags.iter().take(10) {
            let tool = f.tool.as_deref().map(|t| format!(" tool {t}")).unwrap_or_default();
            let _ = writeln!(s, "          {} {:<8} {}{tool} by {}", utc(f.first_ms), f.severity.as_str(), f.rule, f.flagged_by);
        }
    }
    if let (Some(first), Some(last)) = (d.history.first(), d.history.last()) {
        let min = d.history.iter().map(|h| h.score).fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            s,
            "history   {} samples since {} UTC; lowest {:.3}, first {:.3}, last {:.3}",
            d.history.len(),
            utc(first.at_ms),
            min,
            first.score,
            last.score
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_segments() {
        assert_eq!(encode_segment("weather_primary"), "weather_primary");
        assert_eq!(encode_segment("outbound|8080||a.b"), "outbound%7C8080%7C%7Ca.b");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    /// Real `mcp-scanner --format raw` output (4.8.7, YARA analyzer, the testbed's poisoned server).
    const CISCO_RAW: &str = include_str!("../../docs/examples/cisco-mcp-scanner-raw.json");

    #[test]
    fn maps_a_cisco_mcp_scanner_report_to_flags() {
        let report: serde_json::Value = serde_json::from_str(CISCO_RAW).unwrap();
        let conv = cisco_mcp_scanner_flags(&report, "files_primary", false, Severity::Low).unwrap();
        assert_eq!(conv.skipped, 3, "three benign tools, SAFE");
        assert_eq!(conv.flags.len(), 1);
        let f = &conv.flags[0];
        assert_eq!((f.server.as_str(), f.severity, f.tool.as_deref()), ("files_primary", Severity::High, Some("daily_quote")));
        assert_eq!(f.rule, "cisco-mcp-scanner/yara_analyzer/AISubtech-1.1.1,AISubtech-8.2.3");
        let d = f.description.as_deref().unwrap();
        assert!(d.starts_with("Detected 3 threats: credential harvesting"), "{d}");
        assert!(d.contains("AISubtech-8.2.3 Data Exfiltration via Agent Tooling"), "{d}");
        crate::validate::flag(f).unwrap();

        let crit = cisco_mcp_scanner_flags(&report, "files_primary", true, Severity::Low).unwrap();
        assert_eq!(crit.flags[0].severity, Severity::Critical);
        assert_eq!(crit.flags[0].rule, f.rule, "escalating keeps the rule");
        let none = cisco_mcp_scanner_flags(&report, "files_primary", false, Severity::Critical).unwrap();
        assert_eq!((none.flags.len(), none.skipped), (0, 4));
    }

    #[test]
    fn maps_the_older_threats_layout_and_every_severity() {
        let report = serde_json::json!({"scan_results": [
            {"tool_name": "execute_command", "is_safe": false, "findings": {
                "yara_analyzer": {"severity": "HIGH", "threats": {"items": [{"technique_id": "AITech-9.1",
                    "items": [{"sub_technique_id": "AISubtech-9.1.1", "sub_technique_name": "Code Execution"}]}]}},
                "llm_analyzer": {"severity": "medium", "threat_summary": "Vague description"},
                "api_analyzer": {"severity": "LOW", "total_findings": 1},
                "behavioral_analyzer": {"severity": "UNKNOWN"}}},
            {"tool_name": "calc", "is_safe": true, "findings": {}},
            {"prompt_name": "greet", "findings": {"yara_analyzer": {"severity": "SAFE"}}}
        ]});
        let conv = cisco_mcp_scanner_flags(&report, "s", false, Severity::Low).unwrap();
        let got: Vec<(Severity, &str, Option<&str>)> =
            conv.flags.iter().map(|f| (f.severity, f.rule.as_str(), f.description.as_deref())).collect();
        assert_eq!(
            got,
            [
                (Severity::Low, "cisco-mcp-scanner/api_analyzer", None),
                (Severity::Medium, "cisco-mcp-scanner/llm_analyzer", Some("Vague description")),
                (Severity::High, "cisco-mcp-scanner/yara_analyzer/AISubtech-9.1.1", Some("AISubtech-9.1.1 Code Execution")),
            ]
        );
        assert_eq!(conv.skipped, 2);
        let medium_up = cisco_mcp_scanner_flags(&report, "s", false, Severity::Medium).unwrap();
        assert_eq!((medium_up.flags.len(), medium_up.skipped), (2, 3));
    }

    #[test]
    fn rejects_what_is_not_a_cisco_report() {
        let err = cisco_mcp_scanner_flags(&serde_json::json!({"issues": []}), "s", false, Severity::Low).unwrap_err();
        assert!(err.contains("scan_results"), "{err}");
        let odd = serde_json::json!({"scan_results": [{"tool_name": "t", "findings": {"x": {"severity": "SEVERE"}}}]});
        let err = cisco_mcp_scanner_flags(&odd, "s", false, Severity::Low).unwrap_err();
        assert!(err.contains("scan_results[0].findings.x.severity") && err.contains("SEVERE"), "{err}");
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aéb", 3), "aé");
    }

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
