//! The MCP probe: what happens on a session once the handshake is done — list every
//! tool, check the expected ones, run the smoke call, judge it, enforce `max_latency`.
//! Shared by the HTTP probe ([`http`]) and the long-lived stdio session ([`stdio`]).

pub(crate) mod http;
pub(crate) mod stdio;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use fleet_spec::model::{McpCheck, SmokeCall};
use rmcp::model::{CallToolRequestParams, CallToolResult, ServerPeerInfo, Tool};
use rmcp::service::{Peer, RoleClient, ServiceError};
use tokio::time::Instant;

use crate::era::rpc_error_text;
use crate::report::{CheckFailure, CheckPass, DetectedEra, McpFacts};
use fleet_spec::model::human_duration;

/// What the handshake established.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    pub(crate) era: DetectedEra,
    pub(crate) protocol_version: String,
    pub(crate) server_name: String,
    pub(crate) server_version: Option<String>,
    pub(crate) took: Duration,
}

impl Handshake {
    pub(crate) fn from_peer_info(era: DetectedEra, info: &ServerPeerInfo, took: Duration) -> Self {
        Self {
            era,
            protocol_version: info.protocol_version.as_str().to_owned(),
            server_name: info
                .server_info
                .as_ref()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
            server_version: info.server_info.as_ref().map(|i| i.version.clone()),
            took,
        }
    }
}

/// Time limits for the steps after the handshake.
///
/// Each step gets the check's timeout; with `max_latency` set, no step may run past
/// `started + max_latency` either — a probe that is already too slow stops waiting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) started: Instant,
    pub(crate) step_timeout: Duration,
    pub(crate) max_latency: Option<Duration>,
}

impl Budget {
    pub(crate) fn new(started: Instant, check: &McpCheck) -> Self {
        Self {
            started,
            step_timeout: check.cadence.timeout,
            max_latency: check.max_latency,
        }
    }

    /// `TooSlow` if `max_latency` is already spent.
    pub(crate) fn check_latency(&self) -> Result<(), CheckFailure> {
        match self.max_latency {
            Some(limit) if self.started.elapsed() > limit => Err(CheckFailure::TooSlow {
                took: self.started.elapsed(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Runs one step under the step timeout and the latency limit.
    async fn run<T>(
        &self,
        during: &str,
        step: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<Result<T, ServiceError>, CheckFailure> {
        let step_deadline = Instant::now() + self.step_timeout;
        let latency_deadline = self.max_latency.map(|limit| self.started + limit);
        let deadline = match latency_deadline {
            Some(latency) if latency < step_deadline => latency,
            _ => step_deadline,
        };
        match tokio::time::timeout_at(deadline, step).await {
            Ok(result) => Ok(result),
            Err(_) => Err(match (latency_deadline, self.max_latency) {
                (Some(latency), Some(limit)) if latency <= step_deadline => CheckFailure::TooSlow {
                    took: self.started.elapsed(),
                    limit,
                },
                _ => CheckFailure::Timeout {
                    during: during.to_owned(),
                    after: self.step_timeout,
                },
            }),
        }
    }
}

/// What a check asks of an established MCP session: rmcp's client over HTTP, our own
/// over stdio ([`stdio::StdioSession`]).
pub(crate) trait ToolSession: Sync {
    /// Every tool, following `nextCursor`.
    fn list_all_tools(&self) -> impl Future<Output = Result<Vec<Tool>, ServiceError>> + Send;
    fn call_tool(
        &self,
        params: CallToolRequestParams,
    ) -> impl Future<Output = Result<CallToolResult, ServiceError>> + Send;
}

impl ToolSession for Peer<RoleClient> {
    fn list_all_tools(&self) -> impl Future<Output = Result<Vec<Tool>, ServiceError>> + Send {
        Peer::<RoleClient>::list_all_tools(self)
    }

    fn call_tool(
        &self,
        params: CallToolRequestParams,
    ) -> impl Future<Output = Result<CallToolResult, ServiceError>> + Send {
        Peer::<RoleClient>::call_tool(self, params)
    }
}

/// Lists tools, checks them, runs and judges the smoke call, enforces the latency.
pub(crate) async fn exercise(
    peer: &impl ToolSession,
    check: &McpCheck,
    handshake: &Handshake,
    budget: Budget,
) -> Result<CheckPass, CheckFailure> {
    budget.check_latency()?;

    let tools = budget
        .run("tools/list", peer.list_all_tools())
        .await?
        .map_err(|e| {
            step_failure(e, "tools/list", |message| CheckFailure::ToolsList {
                message,
            })
        })?;
    let tools: Vec<String> = tools.into_iter().map(|t| t.name.into_owned()).collect();
    missing_tools(check, &tools)?;

    let mut call_took = None;
    if let Some(call) = &check.call {
        let during = format!("tools/call {}", call.tool);
        let params = call_params(call)?;
        let call_started = Instant::now();
        let result = budget
            .run(&during, peer.call_tool(params))
            .await?
            .map_err(|e| {
                step_failure(e, &during, |message| CheckFailure::CallError {
                    tool: call.tool.clone(),
                    message,
                })
            })?;
        call_took = Some(call_started.elapsed());
        judge_call(call, &result)?;
    }
    budget.check_latency()?;

    let detail = detail(handshake, &tools, check.call.as_ref(), call_took);
    Ok(CheckPass {
        detail,
        mcp: Some(McpFacts {
            era: handshake.era,
            protocol_version: handshake.protocol_version.clone(),
            server_name: handshake.server_name.clone(),
            server_version: handshake.server_version.clone(),
            tools,
            handshake: handshake.took,
            call: call_took,
        }),
    })
}

/// `modern 2026-07-28, sample-server 0.1.0, 5 tools, echo ok in 0.4ms`.
fn detail(
    handshake: &Handshake,
    tools: &[String],
    call: Option<&SmokeCall>,
    call_took: Option<Duration>,
) -> String {
    let mut out = format!("{} {}", handshake.era, handshake.protocol_version);
    if !handshake.server_name.is_empty() {
        out.push_str(&format!(", {}", handshake.server_name));
        if let Some(version) = &handshake.server_version {
            out.push_str(&format!(" {version}"));
        }
    }
    out.push_str(&format!(
        ", {} {}",
        tools.len(),
        if tools.len() == 1 { "tool" } else { "tools" }
    ));
    if let (Some(call), Some(took)) = (call, call_took) {
        out.push_str(&format!(", {} ok in {}", call.tool, human_duration(took)));
    }
    out
}

/// The smoke call's tool counts as expected too: calling an unlisted tool can only
/// fail, and "missing" says why better than the server's error would.
fn missing_tools(check: &McpCheck, listed: &[String]) -> Result<(), CheckFailure> {
    let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let mut missing: Vec<String> = Vec::new();
    let expected = check
        .expect_tools
        .iter()
        .chain(check.call.as_ref().map(|c| &c.tool));
    for name in expected {
        if !listed.contains(name.as_str()) && !missing.contains(name) {
            missing.push(name.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CheckFailure::MissingTools {
            missing,
            found: listed.len(),
        })
    }
}

fn call_params(call: &SmokeCall) -> Result<CallToolRequestParams, CheckFailure> {
    let params = CallToolRequestParams::new(call.tool.clone());
    match &call.arguments {
        serde_json::Value::Object(arguments) => Ok(params.with_arguments(arguments.clone())),
        serde_json::Value::Null => Ok(params),
        other => Err(CheckFailure::CallError {
            tool: call.tool.clone(),
            message: format!("arguments must be a JSON object, not {other}"),
        }),
    }
}

/// Compares a call result with the expectation: `isError` must equal `expect_error`,
/// and `expect_contains` must appear in some text content.
pub(crate) fn judge_call(call: &SmokeCall, result: &CallToolResult) -> Result<(), CheckFailure> {
    let is_error = result.is_error.unwrap_or(false);
    let texts: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.as_str())
        .collect();
    if is_error && !call.expect_error {
        return Err(CheckFailure::CallError {
            tool: call.tool.clone(),
            message: format!("the tool reported an error (isError): {}", snippet(&texts)),
        });
    }
    if !is_error && call.expect_error {
        return Err(CheckFailure::UnexpectedResult {
            tool: call.tool.clone(),
            reason: format!(
                "expected an error result (expect_error: true), got success: {}",
                snippet(&texts)
            ),
        });
    }
    if let Some(needle) = &call.expect_contains
        && !texts.iter().any(|text| text.contains(needle.as_str()))
    {
        return Err(CheckFailure::UnexpectedResult {
            tool: call.tool.clone(),
            reason: format!(
                "no text content contains {needle:?}; got {}",
                snippet(&texts)
            ),
        });
    }
    Ok(())
}

const SNIPPET_CHARS: usize = 120;

/// The text contents, quoted and shortened for a one-line reason.
fn snippet(texts: &[&str]) -> String {
    if texts.is_empty() {
        return "no text content".to_owned();
    }
    let joined = texts.join(" | ");
    let mut short: String = joined.chars().take(SNIPPET_CHARS).collect();
    if short.len() < joined.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// Turns a failed request into the failure a step reports. Transport loss is
/// `Disconnected` whatever the step; a JSON-RPC error belongs to the step.
fn step_failure(
    error: ServiceError,
    during: &str,
    as_step_error: impl FnOnce(String) -> CheckFailure,
) -> CheckFailure {
    match error {
        ServiceError::McpError(e) => as_step_error(rpc_error_text(&e)),
        ServiceError::TransportClosed => CheckFailure::Disconnected {
            message: format!("the connection closed during {during}"),
        },
        ServiceError::TransportSend(e) => CheckFailure::Disconnected {
            message: format!("{during} could not be sent: {}", error_chain(&e)),
        },
        ServiceError::Cancelled { reason } => CheckFailure::Disconnected {
            message: format!(
                "{during} was cancelled: {}",
                reason.as_deref().unwrap_or("no reason given")
            ),
        },
        ServiceError::UnexpectedResponse => CheckFailure::Protocol {
            message: format!("the server answered {during} with the wrong kind of result"),
        },
        ServiceError::Timeout { timeout } => CheckFailure::Timeout {
            during: during.to_owned(),
            after: timeout,
        },
        other => as_step_error(other.to_string()),
    }
}

/// `outer: inner: innermost`, skipping a source whose text its parent already shows.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// Parses a URL a probe can reach: `http://` or `https://`.
///
/// # Errors
/// [`CheckFailure::Connect`] naming the URL and what is wrong with it.
pub(crate) fn http_url(url: &str) -> Result<reqwest::Url, CheckFailure> {
    let connect = |message: String| CheckFailure::Connect {
        target: url.to_owned(),
        message,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| connect(format!("invalid URL: {e}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(connect(format!("unsupported URL scheme {other:?}"))),
    }
}

/// A reqwest client for checking `url`, with mcpfleet's TLS settings
/// ([`fleet_tls::client_config`]: *ring*, the OS trust store) rather than reqwest's
/// process-wide default. `keep_idle: false` closes each connection after its request.
///
/// # Errors
/// [`CheckFailure::Connect`] if reqwest refuses the TLS settings.
pub(crate) fn http_client(url: &str, keep_idle: bool) -> Result<reqwest::Client, CheckFailure> {
    let mut builder =
        reqwest::Client::builder().tls_backend_preconfigured(fleet_tls::client_config());
    if !keep_idle {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().map_err(|e| CheckFailure::Connect {
        target: url.to_owned(),
        message: format!("cannot build the HTTP client: {}", error_chain(&e)),
    })
}

#[cfg(test)]
mod tests {
    use fleet_spec::model::Cadence;
    use rmcp::model::ContentBlock;

    use super::*;

    fn check(expect_tools: &[&str], call: Option<SmokeCall>) -> McpCheck {
        McpCheck {
            cadence: Cadence {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                failure_threshold: 3,
                success_threshold: 1,
            },
            expect_tools: expect_tools.iter().map(|s| s.to_string()).collect(),
            call,
            max_latency: None,
        }
    }

    fn smoke(tool: &str, contains: Option<&str>, expect_error: bool) -> SmokeCall {
        SmokeCall {
            tool: tool.into(),
            arguments: serde_json::json!({}),
            expect_contains: contains.map(str::to_owned),
            expect_error,
        }
    }

    #[test]
    fn missing_tools_are_named_once_and_include_the_call_tool() {
        let listed = vec!["echo".to_owned(), "add".to_owned()];
        let c = check(
            &["echo", "read_graph", "read_graph"],
            Some(smoke("sleep", None, false)),
        );
        assert_eq!(
            missing_tools(&c, &listed),
            Err(CheckFailure::MissingTools {
                missing: vec!["read_graph".into(), "sleep".into()],
                found: 2,
            })
        );
        assert_eq!(missing_tools(&check(&["add"], None), &listed), Ok(()));
    }

    #[test]
    fn a_call_result_must_match_error_flag_and_text() {
        let ok = CallToolResult::success(vec![ContentBlock::text("hello world")]);
        let err = CallToolResult::error(vec![ContentBlock::text("boom")]);

        assert_eq!(
            judge_call(&smoke("echo", Some("world"), false), &ok),
            Ok(())
        );
        assert!(matches!(
            judge_call(&smoke("echo", Some("mars"), false), &ok),
            Err(CheckFailure::UnexpectedResult { reason, .. }) if reason.contains("\"hello world\"")
        ));
        assert!(matches!(
            judge_call(&smoke("fail", None, false), &err),
            Err(CheckFailure::CallError { message, .. }) if message.contains("boom")
        ));
        assert_eq!(judge_call(&smoke("fail", Some("boom"), true), &err), Ok(()));
        assert!(matches!(
            judge_call(&smoke("echo", None, true), &ok),
            Err(CheckFailure::UnexpectedResult { .. })
        ));
    }

    #[test]
    fn arguments_must_be_an_object_or_absent() {
        let mut call = smoke("echo", None, false);
        assert!(call_params(&call).is_ok());
        call.arguments = serde_json::Value::Null;
        assert!(call_params(&call).unwrap().arguments.is_none());
        call.arguments = serde_json::json!([1]);
        assert!(matches!(
            call_params(&call),
            Err(CheckFailure::CallError { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_step_stops_at_max_latency_when_that_comes_first() {
        let budget = Budget {
            started: Instant::now(),
            step_timeout: Duration::from_secs(5),
            max_latency: Some(Duration::from_millis(300)),
        };
        let hang = std::future::pending::<Result<(), ServiceError>>();
        assert!(matches!(
            budget.run("tools/list", hang).await,
            Err(CheckFailure::TooSlow { limit, .. }) if limit == Duration::from_millis(300)
        ));

        let budget = Budget {
            max_latency: Some(Duration::from_secs(60)),
            ..budget
        };
        let hang = std::future::pending::<Result<(), ServiceError>>();
        assert!(matches!(
            budget.run("tools/list", hang).await,
            Err(CheckFailure::Timeout { during, after }) if during == "tools/list" && after == Duration::from_secs(5)
        ));
    }
}
