//! The benchmark's upstream MCP server: the official Rust SDK (rmcp) in stateless mode, fast
//! enough (~15k tools/call/s on 2 cores) that a proxy in front of it is what gets measured.
//!
//! `/mcp` answers JSON, `/sse` answers the same requests as an SSE stream. Tools: `small` (a
//! short text), `big` (a 10 KB text), `fail` (a tool error, to trip a gateway's per-tool
//! breaker) and 97 filler tools, so `tools/list` lists 100.
//! It accepts the `Host` names given with `--allowed-host` (the agent's Host survives Envoy).
//! A request carrying `x-bench-session: ID` gets `mcp-session-id: ID` on its answer, as if the
//! server had created that session: the benchmark uses it to make a sidecar pin many sessions.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use axum::serve::ListenerExt;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

const TOOL_COUNT: usize = 100;
const BIG_BYTES: usize = 10 * 1024;

/// What every request's handler shares: built once.
struct Catalog {
    tools: Vec<Tool>,
    big_text: String,
}

impl Catalog {
    fn new() -> Self {
        let schema: JsonObject = match serde_json::json!({
            "type": "object",
            "properties": {"q": {"type": "string", "description": "free text, ignored"}},
        }) {
            serde_json::Value::Object(m) => m,
            _ => JsonObject::new(),
        };
        let schema = Arc::new(schema);
        let mut tools = vec![
            Tool::new("small", "Answers a short text.", Arc::clone(&schema)),
            Tool::new("big", "Answers a 10 KB text.", Arc::clone(&schema)),
            Tool::new("fail", "Always answers a tool error (isError: true).", Arc::clone(&schema)),
        ];
        for i in tools.len()..TOOL_COUNT {
            tools.push(Tool::new(
                Cow::Owned(format!("tool_{i:03}")),
                Cow::Owned(format!("Filler tool number {i} of the benchmark catalog; answers a short text.")),
                Arc::clone(&schema),
            ));
        }
        let big_text = "0123456789abcdef".repeat(BIG_BYTES / 16);
        Catalog { tools, big_text }
    }
}

#[derive(Clone)]
struct Bench(Arc<Catalog>);

impl ServerHandler for Bench {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.0.tools.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let text = match request.name.as_ref() {
            "fail" => return Ok(CallToolResult::error(vec![ContentBlock::text("failed on purpose")]).into()),
            "big" => self.0.big_text.clone(),
            "small" => "ok".to_string(),
            name if self.0.tools.iter().any(|t| t.name == name) => format!("{name}: ok"),
            name => return Err(McpError::invalid_params(format!("unknown tool `{name}`"), None)),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.0.tools.iter().find(|t| t.name == name).cloned()
    }
}

struct Args {
    listen: String,
    allowed_hosts: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut allowed_hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = it.next().ok_or("--listen needs an address")?,
            "--allowed-host" => allowed_hosts.push(it.next().ok_or("--allowed-host needs a name")?),
            other => return Err(format!("unknown argument `{other}` (use --listen ADDR --allowed-host NAME...)")),
        }
    }
    Ok(Args { listen, allowed_hosts })
}

fn service(catalog: &Arc<Catalog>, hosts: &[String], json: bool) -> StreamableHttpService<Bench, LocalSessionManager> {
    let catalog = Arc::clone(catalog);
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(json)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(hosts.iter().cloned());
    StreamableHttpService::new(move || Ok(Bench(Arc::clone(&catalog))), Arc::new(LocalSessionManager::default()), config)
}

/// `x-bench-session: ID` on the request -> `mcp-session-id: ID` on the answer.
async fn announce_session(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let session = request.headers().get("x-bench-session").cloned();
    let mut response = next.run(request).await;
    if let Some(id) = session {
        response.headers_mut().insert("mcp-session-id", id);
    }
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let catalog = Arc::new(Catalog::new());
    let app = axum::Router::new()
        .nest_service("/mcp", service(&catalog, &args.allowed_hosts, true))
        .nest_service("/sse", service(&catalog, &args.allowed_hosts, false))
        .layer(axum::middleware::from_fn(announce_session));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // The runner reads the bound address from this line.
    println!("listening on {}", listener.local_addr()?);
    // Without TCP_NODELAY, an SSE answer written in several pieces waits for the peer's delayed
    // ACK (40 ms on Linux) between them, and the benchmark would measure that instead.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
