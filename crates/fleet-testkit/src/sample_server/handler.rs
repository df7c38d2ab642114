//! The MCP side of the sample server: tools, eras and per-call faults.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, DiscoverResult,
    Implementation, InitializeRequestParams, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, schemars, tool, tool_router};
use serde::Deserialize;

use super::{Era, SampleServerArgs, ToolName, injected_crash, stderr_line};

/// The sample server's MCP handler. Clones share the fault counters, so an
/// HTTP server's sessions count tool calls together.
#[derive(Debug, Clone)]
pub struct SampleServer {
    settings: Arc<Settings>,
    tool_calls: Arc<AtomicU64>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug)]
struct Settings {
    name: String,
    era: Era,
    latency: Option<Duration>,
    error_rate: f64,
    crash_after: Option<u64>,
    log_stderr: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// Text to send back.
    message: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: f64,
    b: f64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SleepArgs {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct FailArgs {
    /// Text of the error result.
    message: Option<String>,
}

#[tool_router]
impl SampleServer {
    #[tool(description = "Echo the message back")]
    async fn echo(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> String {
        message
    }

    #[tool(description = "Add two numbers")]
    async fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Sleep for `ms` milliseconds, then answer")]
    async fn sleep(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    #[tool(description = "Return a tool error (isError: true)")]
    async fn fail(&self, Parameters(FailArgs { message }): Parameters<FailArgs>) -> CallToolResult {
        let message = message.unwrap_or_else(|| "the fail tool failed, as asked".into());
        CallToolResult::error(vec![ContentBlock::text(message)])
    }
}

impl SampleServer {
    /// A handler configured from the command line.
    pub fn new(args: &SampleServerArgs) -> Self {
        let mut tool_router = Self::tool_router();
        for (tool, name) in [
            (ToolName::Echo, "echo"),
            (ToolName::Add, "add"),
            (ToolName::Sleep, "sleep"),
            (ToolName::Fail, "fail"),
        ] {
            if !args.tools.contains(&tool) {
                tool_router.remove_route(name);
            }
        }
        Self {
            settings: Arc::new(Settings {
                name: args.name.clone(),
                era: args.era,
                latency: args.latency,
                error_rate: args.error_rate,
                crash_after: args.crash_after,
                log_stderr: args.log_stderr,
            }),
            tool_calls: Arc::default(),
            tool_router,
        }
    }

    pub(super) fn era(&self) -> Era {
        self.settings.era
    }

    /// Writes one line to stderr when `--log-stderr` is on.
    pub(super) fn log(&self, line: impl Display) {
        if self.settings.log_stderr {
            stderr_line(format_args!("[{}] {line}", self.settings.name));
        }
    }

    /// Applies the per-call faults to tool call number `call` (1-based).
    async fn inject_faults(&self, call: u64) -> Result<(), McpError> {
        let settings = &self.settings;
        if settings.crash_after.is_some_and(|limit| call > limit) {
            injected_crash(&format!("tools/call number {call} (--crash-after)"));
        }
        if let Some(latency) = settings.latency {
            tokio::time::sleep(latency).await;
        }
        if errors_after(call, settings.error_rate) > errors_after(call - 1, settings.error_rate) {
            return Err(McpError::internal_error(
                format!("injected error on tools/call number {call} (--error-rate)"),
                None,
            ));
        }
        Ok(())
    }
}

/// How many of the first `calls` tool calls `--error-rate` fails. The epsilon
/// keeps rates like 0.57 from losing a call to rounding (0.57 × 100 =
/// 56.99999…).
fn errors_after(calls: u64, rate: f64) -> u64 {
    (calls as f64 * rate + 1e-9).floor() as u64
}

impl ServerHandler for SampleServer {
    fn get_info(&self) -> ServerConfig {
        let protocol_version = match self.settings.era {
            Era::Legacy => ProtocolVersion::LATEST_WITH_INITIALIZE,
            Era::Modern | Era::Both => ProtocolVersion::LATEST,
        };
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                self.settings.name.clone(),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_protocol_version(protocol_version)
    }

    /// rmcp derives the era from this list: what `initialize` may agree to,
    /// what `server/discover` advertises, which per-request versions it
    /// accepts. `era.rs` adds the two rules it cannot express.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        let legacy = ProtocolVersion::known_up_to(&ProtocolVersion::LATEST_WITH_INITIALIZE);
        Cow::Borrowed(match self.settings.era {
            Era::Legacy => legacy,
            Era::Modern => &ProtocolVersion::KNOWN_VERSIONS[legacy.len()..],
            Era::Both => ProtocolVersion::KNOWN_VERSIONS,
        })
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        self.log(format_args!("initialize {}", request.protocol_version));
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, McpError> {
        self.log("server/discover");
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), McpError> {
        self.log("ping");
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.log("tools/list");
        Ok(ListToolsResult::with_all_items(self.tool_router.list_all()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let call = self.tool_calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.log(format_args!("tools/call {} (call {call})", request.name));
        self.inject_faults(call).await?;
        self.tool_router
            .call(ToolCallContext::new(self, request, context))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::errors_after;

    fn failing_calls(rate: f64, calls: u64) -> Vec<u64> {
        (1..=calls)
            .filter(|&call| errors_after(call, rate) > errors_after(call - 1, rate))
            .collect()
    }

    #[test]
    fn error_rate_fails_an_even_deterministic_share() {
        assert_eq!(failing_calls(0.0, 10), Vec::<u64>::new());
        assert_eq!(failing_calls(0.5, 6), vec![2, 4, 6]);
        assert_eq!(failing_calls(0.25, 8), vec![4, 8]);
        assert_eq!(failing_calls(1.0, 3), vec![1, 2, 3]);
        assert_eq!(failing_calls(0.57, 100).len(), 57);
        assert_eq!(failing_calls(0.1, 1000).len(), 100);
    }
}
