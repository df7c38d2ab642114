//! `--conformance` fixtures over stdio, including the server→client traffic
//! (notifications, sampling, elicitation) that the Node suite checks over HTTP.

// Logging, sampling and subscriptions are deprecated by SEP-2577 but are what
// the legacy fixtures exercise.
#![expect(deprecated)]

use rmcp::model::{
    CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
    GetPromptRequestParams, LoggingMessageNotificationParam, ProgressNotificationParam,
    ReadResourceRequestParams, ResourceContents, ResourceUpdatedNotificationParam,
    SubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ClientHandler, RoleClient};

use super::*;

/// A client that declares sampling and elicitation, answers both, and
/// records every notification as one line.
#[derive(Debug, Clone, Default)]
struct RecordingClient {
    seen: Arc<Mutex<Vec<String>>>,
}

impl RecordingClient {
    fn record(&self, line: String) {
        self.seen.lock().unwrap().push(line);
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.starts_with(prefix))
            .count()
    }
}

impl ClientHandler for RecordingClient {
    fn get_info(&self) -> ClientConfig {
        serde_json::from_value(json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "recording-client", "version": "1"},
        }))
        .unwrap()
    }

    async fn create_message(
        &self,
        _params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        Ok(serde_json::from_value(json!({
            "role": "assistant",
            "content": {"type": "text", "text": "pong"},
            "model": "test-model",
        }))
        .unwrap())
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Ok(serde_json::from_value(json!({
            "action": "accept",
            "content": {"username": "ada", "email": "ada@example.com"},
        }))
        .unwrap())
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.record(format!("log {}", params.data));
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.record(format!("progress {}", params.progress));
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.record("tools/list_changed".into());
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.record(format!("updated {}", params.uri));
    }
}

type RecordingSession = RunningService<RoleClient, RecordingClient>;

async fn conformance_client() -> (Server, RecordingSession, RecordingClient) {
    let (server, stdout, stdin) = Server::spawn(&["--conformance"]);
    let recorder = RecordingClient::default();
    let client = recorder
        .clone()
        .serve((stdout, stdin))
        .await
        .expect("initialize");
    (server, client, recorder)
}

async fn call_fixture(client: &RecordingSession, tool: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("{tool}: {error}"))
}

async fn read_text(client: &RecordingSession, uri: &str) -> String {
    let read = client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{uri}: expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn fixtures_answer_as_the_suite_expects() {
    let (_server, client, _recorder) = conformance_client().await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 4 + 13);
    assert_eq!(client.list_all_resources().await.unwrap().len(), 3);
    assert_eq!(client.list_all_prompts().await.unwrap().len(), 4);

    let simple = call_fixture(&client, "test_simple_text", json!({})).await;
    assert_eq!(text(&simple), "This is a simple text response for testing.");
    let failed = call_fixture(&client, "test_error_handling", json!({})).await;
    assert_eq!(failed.is_error, Some(true));
    assert!(
        read_text(&client, "test://template/123/data")
            .await
            .contains("123")
    );

    let arguments = json!({"arg1": "x", "arg2": "y"})
        .as_object()
        .cloned()
        .unwrap();
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("test_prompt_with_arguments").with_arguments(arguments),
        )
        .await
        .unwrap();
    let prompt = serde_json::to_string(&prompt.messages).unwrap();
    assert!(prompt.contains("arg1='x', arg2='y'"), "{prompt}");
}

#[tokio::test]
async fn fixtures_reach_back_to_the_client() {
    let (_server, client, recorder) = conformance_client().await;
    call_fixture(&client, "test_tool_with_logging", json!({})).await;
    wait_until("three log notifications arrive", DEADLINE, async || {
        recorder.count("log ") == 3
    })
    .await;

    let sampled = call_fixture(&client, "test_sampling", json!({"prompt": "ping"})).await;
    assert_eq!(text(&sampled), "LLM response: pong");
    let elicited = call_fixture(&client, "test_elicitation", json!({"message": "who?"})).await;
    assert!(
        text(&elicited).contains("action=accept"),
        "{}",
        text(&elicited)
    );
}

#[tokio::test]
async fn dynamic_tool_notifies_subscribers_of_the_watched_resource() {
    let (_server, client, recorder) = conformance_client().await;
    let watched = "test://watched-resource";
    assert!(read_text(&client, watched).await.ends_with("version 0"));
    client
        .subscribe(SubscribeRequestParams::new(watched))
        .await
        .unwrap();
    call_fixture(&client, "test_dynamic_tool", json!({})).await;
    wait_until("list_changed and updated arrive", DEADLINE, async || {
        recorder.count("tools/list_changed") == 1 && recorder.count("updated ") == 1
    })
    .await;
    assert!(read_text(&client, watched).await.ends_with("version 1"));
}

/// rmcp's constructors mark results complete; literals must too, since
/// 2026-07-28 requires `resultType` (rmcp strips it for legacy peers).
#[tokio::test]
async fn modern_results_say_they_are_complete() {
    let (_server, stdout, mut stdin) = Server::spawn(&["--conformance", "--era", "modern"]);
    let mut lines = BufReader::new(stdout).lines();
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "test_simple_text", "arguments": {}, "_meta": modern_meta()}});
    send_line(&mut stdin, &call).await;
    let response = read_json(&mut lines).await;
    assert_eq!(response["result"]["resultType"], "complete", "{response}");
}

#[tokio::test]
async fn without_the_flag_there_are_no_fixtures() {
    let (_server, client) = stdio_client(&[]).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 4);
    let refused = client.list_all_resources().await;
    assert!(
        matches!(&refused, Err(ServiceError::McpError(error)) if error.code == ErrorCode::METHOD_NOT_FOUND),
        "{refused:?}"
    );
}
