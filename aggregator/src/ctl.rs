//! `mcp-warden-ctl`: the operator's command line over the API (blocking HTTP with ureq).

use crate::views::{AuditPage, AuditVerification, DecisionAck, ErrorBody, FlagAck, RatingAck, ServerDetail};
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
    /// Bearer token (operator for quarantine, release and audit; rater or operator to rate;
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
            Err(format!("{method} {path}: HTTP {}: {msg}", status.as_u16()))
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
            Err(format!("POST {path}: HTTP {}: {msg}", status.as_u16()))
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

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("unexpected answer from the aggregator: {e}"))
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
    if let Command::Restore { from, db, force } = &cli.command {
        let (report, kept) = crate::backup::restore(from, db, *force)?;
        let mut s = format!("restored {} as {}: {}\n", from.display(), db.display(), report.summary());
        for k in kept {
            let _ = writeln!(s, "kept the previous file as {}", k.display());
        }
        return out.write_all(s.as_bytes()).map_err(|e| e.to_string());
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
        Command::Restore { .. } => String::new(),
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

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
