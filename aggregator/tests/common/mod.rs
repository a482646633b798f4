//! Test harness: the Router in-process over a manual clock, and the real binary on a loopback
//! port for crash and CLI tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use mcp_warden_aggregator::{http, Location, ManualClock, Service, Settings, Tokens};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tower::ServiceExt;

pub const T0: u64 = 1_700_000_000_000;

pub const SIDECAR: &str = "sidecar-token-000001";
pub const SIDECAR2: &str = "sidecar-token-000002";
pub const RATER: &str = "rater-token-alice-01";
pub const RATER_BOB: &str = "rater-token-bob-0001";
pub const SCANNER: &str = "scanner-token-000001";
pub const OPERATOR: &str = "operator-token-00001";
pub const READER: &str = "reader-token-0000001";

pub fn sybil_token(i: usize) -> String {
    format!("sybil-token-{i:06}")
}

/// Every role, plus 100 Sybil raters.
pub fn tokens_json() -> String {
    let mut tokens = vec![
        json!({"token": SIDECAR, "name": "sidecar-1", "role": "sidecar"}),
        json!({"token": SIDECAR2, "name": "sidecar-2", "role": "sidecar"}),
        json!({"token": RATER, "name": "alice", "role": "rater"}),
        json!({"token": RATER_BOB, "name": "bob", "role": "rater"}),
        json!({"token": SCANNER, "name": "scanner-1", "role": "scanner"}),
        json!({"token": OPERATOR, "name": "ops", "role": "operator"}),
        json!({"token": READER, "name": "dashboard", "role": "reader"}),
    ];
    for i in 0..100 {
        tokens.push(json!({"token": sybil_token(i), "name": format!("sybil-{i}"), "role": "rater"}));
    }
    json!({ "tokens": tokens }).to_string()
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mcp-warden-aggregator-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert!(self.status.is_success(), "{}: {}", self.status, String::from_utf8_lossy(&self.body));
        self.json()
    }
}

/// The PostgreSQL server the tests may use (`testbed/postgres.py` starts one and sets it).
pub fn postgres_server() -> Option<String> {
    std::env::var("MCP_WARDEN_TEST_PG").ok().filter(|s| !s.is_empty())
}

/// The suite runs on PostgreSQL (a fresh database per harness on that server) when
/// `MCP_WARDEN_TEST_BACKEND=postgres`, else on SQLite.
pub fn on_postgres() -> bool {
    std::env::var("MCP_WARDEN_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Runs `f` on a thread of its own: the blocking PostgreSQL client runs its own runtime, which
/// must not start inside the test's.
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

/// A fresh, empty database on the test server; its URL.
pub fn fresh_pg_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let server = postgres_server().expect("MCP_WARDEN_TEST_PG is not set: run the suite through testbed/postgres.py");
    let name = format!("t_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
    blocking(move || {
        let mut c = postgres::Client::connect(&server, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    });
    url
}

/// Runs `sql` on the database at `url` (as someone with access to the database would).
pub fn pg_execute(url: &str, sql: &str) -> Result<u64, String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        c.execute(sql.as_str(), &[]).map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string()))
    })
}

/// The service in-process: the real Router and database, a clock the test moves.
pub struct Harness {
    pub dir: TempDir,
    pub location: Location,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    pub svc: Service,
    pub app: Router,
}

impl Harness {
    /// Default settings, except rate limits far above what a test sends (tests that check the
    /// limits set their own).
    pub fn new() -> Harness {
        Self::with_settings(relaxed())
    }

    pub fn with_settings(settings: Settings) -> Harness {
        let dir = TempDir::new("api");
        let location =
            if on_postgres() { Location::Postgres(fresh_pg_database()) } else { Location::Sqlite(dir.path().join("trust.db")) };
        Self::on(dir, location, settings, Arc::new(ManualClock::new(T0)))
    }

    /// A fresh harness whose service accepts the tokens of `tokens` (a tokens file's JSON)
    /// instead of [`tokens_json`] (a reopen goes back to those).
    pub fn with_tokens(settings: Settings, tokens: &str) -> Harness {
        let dir = TempDir::new("api");
        let location =
            if on_postgres() { Location::Postgres(fresh_pg_database()) } else { Location::Sqlite(dir.path().join("trust.db")) };
        let clock = Arc::new(ManualClock::new(T0));
        let svc = Service::open(&location, Tokens::from_json(tokens.as_bytes()).unwrap(), settings.clone(), clock.clone()).unwrap();
        let app = http::router(svc.clone());
        Harness { dir, location, clock, settings, svc, app }
    }

    /// A harness on `location` (another replica, when it is a PostgreSQL database in use).
    pub fn on(dir: TempDir, location: Location, settings: Settings, clock: Arc<ManualClock>) -> Harness {
        let (svc, app) = Self::open(&location, &settings, &clock);
        Harness { dir, location, clock, settings, svc, app }
    }

    fn open(location: &Location, settings: &Settings, clock: &Arc<ManualClock>) -> (Service, Router) {
        let tokens = Tokens::from_json(tokens_json().as_bytes()).unwrap();
        let svc = Service::open(location, tokens, settings.clone(), clock.clone()).unwrap();
        let app = http::router(svc.clone());
        (svc, app)
    }

    /// Closes the database and opens it again (a restart, same clock).
    pub fn reopen(self) -> Harness {
        let Harness { dir, location, clock, settings, svc, app } = self;
        drop(app);
        drop(svc);
        let (svc, app) = Self::open(&location, &settings, &clock);
        Harness { dir, location, clock, settings, svc, app }
    }

    /// Closes the database, runs `f` on its file (as someone with access to the disk would), and
    /// opens it again.
    pub fn reopen_after(self, f: impl FnOnce(&Path)) -> Harness {
        let Harness { dir, location, clock, settings, svc, app } = self;
        drop(app);
        drop(svc);
        f(&dir.path().join("trust.db"));
        let (svc, app) = Self::open(&location, &settings, &clock);
        Harness { dir, location, clock, settings, svc, app }
    }

    /// A harness on the database `db` (copied into a fresh directory), with this clock.
    pub fn on_database(db: &Path, clock: Arc<ManualClock>) -> Harness {
        let dir = TempDir::new("api");
        std::fs::copy(db, dir.path().join("trust.db")).unwrap();
        let location = Location::Sqlite(dir.path().join("trust.db"));
        Self::on(dir, location, relaxed(), clock)
    }

    pub async fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec();
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request("GET", path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request("POST", path, Some(token), Some(body.to_string().into_bytes()), &[]).await
    }

    /// A batch from `token` with `ok` successes and `failed` 5xx failures for `server`.
    pub async fn report(&self, token: &str, batch_id: &str, server: &str, ok: u64, failed: u64) -> Resp {
        let body = json!({
            "sidecar": "pod-1", "batch_id": batch_id, "period_ms": 5000,
            "servers": [{"server": server, "outcomes": {"success": ok, "failures": {"http_5xx": failed}}}]
        });
        self.post("/v1/signals", token, body).await
    }

    pub async fn scores(&self) -> Value {
        self.get("/v1/scores", READER).await.ok()
    }

    /// (score, state) of `server` in the published document.
    pub async fn published(&self, server: &str) -> (f64, String) {
        let doc = self.scores().await;
        let s = doc["servers"].as_array().unwrap().iter().find(|s| s["server"] == server).unwrap_or_else(|| panic!("{server} not in {doc}"));
        (s["score"].as_f64().unwrap(), s["state"].as_str().unwrap().to_string())
    }

    pub async fn detail(&self, server: &str) -> Value {
        self.get(&format!("/v1/servers/{server}"), READER).await.ok()
    }

    pub async fn tick(&self) {
        self.svc.tick().await.unwrap();
    }
}

/// The default settings with rate limits no test loop reaches.
///
/// The harness's two sidecar tokens stand for two sidecars; tests that are not about which
/// servers are tracked have either one introduce a server on its own (`server_admission_quorum`
/// 1, as a one-sidecar mesh does by default). Admission tests set the quorum themselves.
pub fn relaxed() -> Settings {
    let mut s = Settings::default();
    s.sidecar.admission_quorum = Some(1);
    let lots = mcp_warden_aggregator::config::Rate::new(1_000_000.0, 1_000_000);
    let l = &mut s.limits;
    (l.sidecar, l.rater, l.scanner, l.operator, l.reader, l.unauthenticated) = (lots, lots, lots, lots, lots, lots);
    s
}

/// The real `mcp-warden-aggregator` process on a loopback port it picked itself.
pub struct Process {
    pub child: Child,
    pub base: String,
}

pub fn write_tokens(dir: &Path) -> PathBuf {
    let p = dir.join("tokens.json");
    std::fs::write(&p, tokens_json()).unwrap();
    p
}

impl Process {
    pub fn start(dir: &Path) -> Process {
        Self::start_with(dir, None)
    }

    /// Started with `config` (JSON) as its `--config`. As with [`relaxed`], one sidecar
    /// credential introduces a server (`server_admission_quorum` 1) unless `config` sets it.
    pub fn start_with(dir: &Path, config: Option<&Value>) -> Process {
        let tokens = write_tokens(dir);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("aggregator.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-warden-aggregator"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"]).arg(dir.join("trust.db")).arg("--tokens").arg(&tokens);
        let mut config = config.cloned().unwrap_or_else(|| serde_json::json!({}));
        let sidecar = config.as_object_mut().unwrap().entry("sidecar").or_insert_with(|| serde_json::json!({}));
        sidecar.as_object_mut().unwrap().entry("server_admission_quorum").or_insert(serde_json::json!(1));
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        cmd.arg("--config").arg(path);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("aggregator.log")).unwrap_or_default();
                panic!("aggregator did not start within 60 s; log:\n{log}");
            }
        };
        let p = Process { child, base: format!("http://{addr}") };
        let health = agent().get(&format!("{}/healthz", p.base)).call().unwrap();
        assert_eq!(health.status(), 200);
        p
    }

    /// SIGKILL (std's `Child::kill` on Unix), by this child's PID only.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking client that returns 4xx/5xx as answers, with bounded timeouts.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POST `body` with `token`: (status, JSON answer), or Err if the connection failed.
pub fn post(agent: &ureq::Agent, url: &str, token: &str, body: &Value) -> Result<(u16, Value), String> {
    let mut res = agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(body)
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

pub fn get(agent: &ureq::Agent, url: &str, token: &str) -> (u16, Value) {
    let mut res = agent.get(url).header("Authorization", &format!("Bearer {token}")).call().unwrap();
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
