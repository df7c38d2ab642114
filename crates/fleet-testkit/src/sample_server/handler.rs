//! The MCP side of the sample server: tools, eras, per-call faults, and the
//! MCP methods behind `--conformance`.

// logging/setLevel and resources/(un)subscribe are deprecated by SEP-2577
// (2026-07-28) but still part of the legacy eras.
#![expect(deprecated)]

use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Display;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{InputResponses, RequestState, ToolCallContext};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    ContentBlock, DiscoverResult, ElicitRequest, ElicitRequestParams, ElicitationSchema,
    GetPromptRequestParams, GetPromptResponse, Implementation, InitializeRequestParams,
    InitializeResult, InputRequest, InputRequests, InputRequiredResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, schemars, tool, tool_router};
use serde::Deserialize;

use super::{Era, SampleServerArgs, ToolName, conformance, injected_crash, stderr_line};

/// The sample server's MCP handler: one per session ([`Self::new_session`]),
/// all sharing the process-wide counters.
#[derive(Debug, Clone)]
pub struct SampleServer {
    settings: Arc<Settings>,
    pub(super) shared: Arc<Shared>,
    pub(super) session: Arc<Session>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug)]
struct Settings {
    name: String,
    era: Era,
    conformance: bool,
    latency: Option<Duration>,
    error_rate: f64,
    crash_after: Option<u64>,
    log_stderr: bool,
}

/// The key of the one input request `confirm` makes.
const CONFIRM_INPUT: &str = "confirm";

/// State of the whole process, whichever session touches it.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// tools/call received so far, for `--crash-after` and `--error-rate`.
    tool_calls: AtomicU64,
    /// Version of `test://watched-resource`.
    pub(super) watched_version: AtomicU64,
    /// `<--name>:<pid>.<random>`: what makes this process's `confirm`
    /// request states unique, even among processes with the same `--name`.
    confirm_prefix: String,
    /// `confirm` request states issued so far.
    confirm_count: AtomicU64,
    /// `confirm` request states issued and not yet retried.
    pending_confirms: Mutex<HashSet<String>>,
}

impl Shared {
    fn new(name: &str) -> Self {
        // Seeded randomly per process; no need for a random number crate.
        let random = std::hash::RandomState::new().hash_one(std::process::id());
        Self {
            confirm_prefix: format!("{name}:{}.{random:016x}", std::process::id()),
            ..Self::default()
        }
    }

    /// A new `confirm` request state, remembered until [`Self::take_confirm`].
    fn issue_confirm(&self) -> String {
        let count = self.confirm_count.fetch_add(1, Ordering::SeqCst) + 1;
        let state = format!("{}:{count}", self.confirm_prefix);
        self.pending_confirms().insert(state.clone());
        state
    }

    /// Forgets `state`; whether this process issued it and it was pending.
    fn take_confirm(&self, state: &str) -> bool {
        self.pending_confirms().remove(state)
    }

    fn pending_confirms(&self) -> parking_lot::MutexGuard<'_, HashSet<String>> {
        self.pending_confirms.lock()
    }
}

/// State of one MCP session.
#[derive(Debug)]
pub(super) struct Session {
    log_level: Mutex<LoggingLevel>,
    subscriptions: Mutex<BTreeSet<String>>,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            log_level: Mutex::new(LoggingLevel::Debug),
            subscriptions: Mutex::default(),
        }
    }
}

impl Session {
    pub(super) fn log_level(&self) -> LoggingLevel {
        *self.log_level.lock()
    }

    pub(super) fn is_subscribed(&self, uri: &str) -> bool {
        self.subscriptions().contains(uri)
    }

    fn subscriptions(&self) -> parking_lot::MutexGuard<'_, BTreeSet<String>> {
        self.subscriptions.lock()
    }
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

    #[tool(description = "Name this server process: `pid N`")]
    async fn whoami(&self) -> String {
        format!("pid {}", std::process::id())
    }

    #[tool(
        description = "Ask the client to confirm (an input_required round trip, protocol \
                       2026-07-28 only), then answer `confirmed by <server name>`"
    )]
    async fn confirm(
        &self,
        context: RequestContext<RoleServer>,
        RequestState(request_state): RequestState,
        InputResponses(input_responses): InputResponses,
    ) -> Result<CallToolResponse, McpError> {
        let version = context.protocol_version();
        // ISO dates compare like the days they name.
        if version
            .as_ref()
            .is_none_or(|version| version.as_str() < ProtocolVersion::V_2026_07_28.as_str())
        {
            let spoken = version
                .as_ref()
                .map_or("no version", ProtocolVersion::as_str);
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "confirm needs the 2026-07-28 protocol (this session speaks {spoken})"
            ))])
            .into());
        }
        let name = self.name();
        let Some(state) = request_state else {
            if input_responses.is_some() {
                return Err(McpError::invalid_params(
                    "confirm: inputResponses without a requestState",
                    None,
                ));
            }
            let state = self.shared.issue_confirm();
            self.log(format_args!("confirm: issued requestState {state}"));
            return Ok(confirm_input_required(name, state).into());
        };
        if !self.shared.take_confirm(&state) {
            self.log(format_args!("confirm: unknown requestState {state}"));
            return Err(McpError::invalid_params(
                format!(
                    "unknown requestState {state:?}: {name} (pid {}) did not issue it, or it \
                     was already used",
                    std::process::id()
                ),
                None,
            ));
        }
        self.log(format_args!("confirm: retry with requestState {state}"));
        let Some(answer) = input_responses
            .as_ref()
            .and_then(|responses| responses.get(CONFIRM_INPUT))
        else {
            return Err(McpError::invalid_params(
                format!("confirm: the retry has no inputResponses.{CONFIRM_INPUT}"),
                None,
            ));
        };
        if answer["action"] == "accept" && answer["content"]["ok"] == true {
            Ok(
                CallToolResult::success(vec![ContentBlock::text(format!("confirmed by {name}"))])
                    .into(),
            )
        } else {
            Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "not confirmed by {name}: {answer}"
            ))])
            .into())
        }
    }
}

/// `confirm`'s first answer: one elicitation asking for `{ok: boolean}`.
fn confirm_input_required(name: &str, state: String) -> InputRequiredResult {
    let schema = ElicitationSchema::builder()
        .required_bool("ok")
        .build_unchecked();
    let elicitation = ElicitRequest::new(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!("Confirm the call to {name}?"),
        requested_schema: schema,
    });
    let requests = InputRequests::from([(
        CONFIRM_INPUT.to_owned(),
        InputRequest::Elicitation(elicitation),
    )]);
    InputRequiredResult::new(Some(requests), Some(state))
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
            (ToolName::Whoami, "whoami"),
            (ToolName::Confirm, "confirm"),
        ] {
            if !args.tools.contains(&tool) {
                tool_router.remove_route(name);
            }
        }
        if args.conformance {
            tool_router.merge(conformance::tools());
        }
        Self {
            settings: Arc::new(Settings {
                name: args.name.clone(),
                era: args.era,
                conformance: args.conformance,
                latency: args.latency,
                error_rate: args.error_rate,
                crash_after: args.crash_after,
                log_stderr: args.log_stderr,
            }),
            shared: Arc::new(Shared::new(&args.name)),
            session: Arc::default(),
            tool_router,
        }
    }

    /// A handler for another session of the same server.
    pub fn new_session(&self) -> Self {
        Self {
            session: Arc::default(),
            ..self.clone()
        }
    }

    pub(super) fn era(&self) -> Era {
        self.settings.era
    }

    pub(super) fn name(&self) -> &str {
        &self.settings.name
    }

    /// Refuses what only `--conformance` serves, as a server without the
    /// capability would.
    fn require_conformance(&self, method: &'static str) -> Result<(), McpError> {
        if self.settings.conformance {
            Ok(())
        } else {
            Err(McpError::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                method,
                None,
            ))
        }
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
        let capabilities = if self.settings.conformance {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_prompts()
                .enable_logging()
                .enable_completions()
                .build()
        } else {
            ServerCapabilities::builder().enable_tools().build()
        };
        ServerConfig::new(capabilities)
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
        let call = self.shared.tool_calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.log(format_args!("tools/call {} (call {call})", request.name));
        self.inject_faults(call).await?;
        self.tool_router
            .call(ToolCallContext::new(self, request, context))
            .await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.log("resources/list");
        self.require_conformance("resources/list")?;
        conformance::resources()
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.log("resources/templates/list");
        self.require_conformance("resources/templates/list")?;
        conformance::resource_templates()
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.log(format_args!("resources/read {}", request.uri));
        self.require_conformance("resources/read")?;
        let version = self.shared.watched_version.load(Ordering::SeqCst);
        conformance::read_resource(&request.uri, version).map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.log(format_args!("resources/subscribe {}", request.uri));
        self.require_conformance("resources/subscribe")?;
        self.session.subscriptions().insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.log(format_args!("resources/unsubscribe {}", request.uri));
        self.require_conformance("resources/unsubscribe")?;
        self.session.subscriptions().remove(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        self.log("prompts/list");
        self.require_conformance("prompts/list")?;
        conformance::prompts()
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        self.log(format_args!("prompts/get {}", request.name));
        self.require_conformance("prompts/get")?;
        conformance::prompt(&request.name, request.arguments.as_ref()).map(Into::into)
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        self.log("completion/complete");
        self.require_conformance("completion/complete")?;
        Ok(CompleteResult::default())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.log(format_args!("logging/setLevel {:?}", request.level));
        self.require_conformance("logging/setLevel")?;
        *self.session.log_level.lock() = request.level;
        Ok(())
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
