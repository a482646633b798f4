//! A benchmark probe, not a product: a proxy-wasm filter that routes like mcp-warden (sets the
//! route header the bootstrap's `cluster_header` route follows) and does, per request, only the
//! pieces of work its configuration switches on. Comparing probes that differ in one switch
//! tells what each host mechanism costs inside Envoy's V8, where a profiler sees only
//! "[JIT]" and a stripped Envoy binary.
//!
//! Configuration (JSON): `{"cluster": "upstream", "hold_request_body": false,
//! "read_headers": 0, "inspect_response": false, "shared_data_ops": 0, "metrics": 0,
//! "parse_json": false}`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use serde::Deserialize;
use std::rc::Rc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    /// The cluster every request is routed to (through the route header).
    cluster: String,
    /// Pause POSTs on their headers until the body is complete, then read it (what mcp-warden
    /// does to know the request id before Envoy could answer).
    #[serde(default)]
    hold_request_body: bool,
    /// Request headers read one by one (mcp-warden reads about 8: :authority, :path, :method,
    /// content-length, mcp-method, mcp-name, mcp-protocol-version, and removes its own).
    #[serde(default)]
    read_headers: u32,
    /// Read the response's :status and content-type, set a response header, and copy every
    /// response body chunk into the VM (what judging an answer needs at least).
    #[serde(default)]
    inspect_response: bool,
    /// Shared-data reads plus compare-and-swap writes per request (mcp-warden: one read to
    /// admit, one read and one CAS write to record).
    #[serde(default)]
    shared_data_ops: u32,
    /// Counter increments per request.
    #[serde(default)]
    metrics: u32,
    /// Parse the request and the response body as JSON (serde_json into a Value).
    #[serde(default)]
    parse_json: bool,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot { probe: None, metric: 0 }) });
}}

struct ProbeRoot {
    probe: Option<Rc<Probe>>,
    metric: u32,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let Ok(Some(bytes)) = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) else { return false };
        match serde_json::from_slice::<Probe>(&bytes) {
            Ok(p) => {
                self.metric = hostcalls::define_metric(MetricType::Counter, "mcp_bench_probe.requests").unwrap_or(0);
                let _ = hostcalls::set_shared_data("mcp_bench_probe.state", Some(&[0u8; 64]), None);
                self.probe = Some(Rc::new(p));
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("mcp-bench-probe: bad configuration: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let probe = Rc::clone(self.probe.as_ref()?);
        Some(Box::new(ProbeHttp { probe, metric: self.metric, post: false, judged: false }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeHttp {
    probe: Rc<Probe>,
    metric: u32,
    post: bool,
    judged: bool,
}

const HEADERS: [&str; 8] =
    [":authority", ":path", ":method", "content-length", "mcp-method", "mcp-name", "mcp-protocol-version", "accept"];

impl ProbeHttp {
    fn shared_data_round(&self) {
        for i in 0..self.probe.shared_data_ops {
            if let Ok((Some(mut v), cas)) = hostcalls::get_shared_data("mcp_bench_probe.state") {
                if i % 2 == 1 {
                    if let Some(b) = v.first_mut() {
                        *b = b.wrapping_add(1);
                    }
                    let _ = hostcalls::set_shared_data("mcp_bench_probe.state", Some(&v), cas);
                }
            }
        }
    }
}

impl Context for ProbeHttp {}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        for name in HEADERS.iter().take(self.probe.read_headers as usize) {
            let v = hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten();
            if *name == ":method" {
                self.post = v.as_deref() == Some("POST");
            }
        }
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-mcp-warden-cluster", Some(&self.probe.cluster));
        for _ in 0..self.probe.metrics {
            let _ = hostcalls::increment_metric(self.metric, 1);
        }
        self.shared_data_round();
        if self.probe.hold_request_body && !end_of_stream {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !self.probe.hold_request_body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if let Ok(Some(body)) = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
            if self.probe.parse_json {
                let _ = serde_json::from_slice::<serde_json::Value>(&body);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self.probe.inspect_response {
            let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
            let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, "content-type");
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-mcp-warden-served-by", Some(&self.probe.cluster));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if self.probe.inspect_response && !self.judged && size > 0 {
            if let Ok(Some(chunk)) = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size) {
                if self.probe.parse_json && end_of_stream {
                    let _ = serde_json::from_slice::<serde_json::Value>(&chunk);
                }
            }
            if end_of_stream {
                self.judged = true;
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.probe.shared_data_ops > 0 {
            self.shared_data_round();
        }
        let _ = self.post;
    }
}
