//! The opt-in `confirm` tool: a multi round-trip request (SEP-2322) whose
//! `requestState` only the process that issued it accepts.

use rmcp::ClientHandler;
use rmcp::model::{
    CallToolResponse, ClientCapabilities, ElicitRequestParams, ElicitResult, ElicitationAction,
    Implementation, InputRequiredResult, InputResponses,
};
use rmcp::service::RequestContext;

use super::*;

/// A 2026-07-28 client that declares elicitation and answers `{ok: true}`.
#[derive(Debug, Clone)]
struct ConfirmingClient;

impl ClientHandler for ConfirmingClient {
    fn get_info(&self) -> ClientConfig {
        let mut config = ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("confirming-client", "0"),
        );
        config.protocol_version = ProtocolVersion::V_2026_07_28;
        config
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"ok": true})))
    }
}

async fn modern_client<S: ClientHandler>(handler: S, url: &str) -> RunningService<RoleClient, S> {
    handler
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(url.to_owned()),
            modern_only(),
        )
        .await
        .expect("discover over http")
}

/// `confirm`'s first answer, taken apart by hand.
async fn first_round(
    client: &RunningService<RoleClient, impl ClientHandler>,
) -> InputRequiredResult {
    match client
        .call_tool_once(CallToolRequestParams::new("confirm"))
        .await
        .expect("the first round")
    {
        CallToolResponse::InputRequired(result) => result,
        other => panic!("expected input_required, got {other:?}"),
    }
}

/// The retry of `first`, answered with `answer`.
fn retry(first: &InputRequiredResult, answer: Value) -> CallToolRequestParams {
    CallToolRequestParams::new("confirm")
        .with_input_responses(InputResponses::from([("confirm".to_owned(), answer)]))
        .with_request_state(first.request_state.clone().expect("a requestState"))
}

fn accepted() -> Value {
    json!({"action": "accept", "content": {"ok": true}})
}

async fn call_once(
    client: &RunningService<RoleClient, impl ClientHandler>,
    params: CallToolRequestParams,
) -> Result<CallToolResult, ServiceError> {
    match client.call_tool_once(params).await? {
        CallToolResponse::Complete(result) => Ok(result),
        other => panic!("expected a final result, got {other:?}"),
    }
}

#[tokio::test]
async fn confirm_round_trips_through_rmcp_call_tool() {
    let (_alpha, url) = Server::spawn_http(&["--tools", "confirm", "--name", "alpha"]).await;
    let client = modern_client(ConfirmingClient, &url).await;
    let result = client
        .call_tool(CallToolRequestParams::new("confirm"))
        .await
        .expect("confirm");
    assert_eq!(text(&result), "confirmed by alpha");
    assert_ne!(result.is_error, Some(true));
}

#[tokio::test]
async fn confirm_asks_for_one_elicitation_and_a_process_local_state() {
    let (_alpha, url) = Server::spawn_http(&["--tools", "confirm", "--name", "alpha"]).await;
    let client = modern_client(ConfirmingClient, &url).await;
    let first = first_round(&client).await;
    let wire = serde_json::to_value(&first).unwrap();
    assert_eq!(wire["resultType"], "input_required");
    let elicitation = &wire["inputRequests"]["confirm"];
    assert_eq!(elicitation["method"], "elicitation/create");
    assert_eq!(
        elicitation["params"]["requestedSchema"]["properties"]["ok"]["type"],
        "boolean"
    );
    assert_eq!(
        elicitation["params"]["requestedSchema"]["required"],
        json!(["ok"])
    );
    let state = wire["requestState"].as_str().expect("a requestState");
    assert!(state.starts_with("alpha:"), "{state}");
    // Each call gets its own state.
    assert_ne!(
        first_round(&client).await.request_state,
        first.request_state
    );

    // A declined elicitation is a tool error, and uses the state up.
    let declined = first_round(&client).await;
    let result = call_once(&client, retry(&declined, json!({"action": "decline"})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).starts_with("not confirmed by alpha"),
        "{}",
        text(&result)
    );
    let again = mcp_error(call_once(&client, retry(&declined, accepted())).await);
    assert!(
        again.message.contains("unknown requestState"),
        "{}",
        again.message
    );
}

#[tokio::test]
async fn confirm_retry_on_another_process_is_refused() {
    // The same --name on purpose: the state names the process, not the name.
    let (_alpha, alpha_url) = Server::spawn_http(&["--tools", "confirm", "--name", "alpha"]).await;
    let (_other, other_url) = Server::spawn_http(&["--tools", "confirm", "--name", "alpha"]).await;
    let alpha = modern_client(ConfirmingClient, &alpha_url).await;
    let other = modern_client(ConfirmingClient, &other_url).await;
    let first = first_round(&alpha).await;

    let refused = mcp_error(call_once(&other, retry(&first, accepted())).await);
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS);
    assert!(
        refused.message.contains("unknown requestState"),
        "{}",
        refused.message
    );

    // The process that issued it still honours it, once.
    let result = call_once(&alpha, retry(&first, accepted())).await.unwrap();
    assert_eq!(text(&result), "confirmed by alpha");
    let replayed = mcp_error(call_once(&alpha, retry(&first, accepted())).await);
    assert_eq!(replayed.code, ErrorCode::INVALID_PARAMS);
    assert!(replayed.message.contains("unknown requestState"));
}

#[tokio::test]
async fn confirm_is_a_tool_error_on_a_legacy_session() {
    let (_server, client) = stdio_client(&["--tools", "confirm"]).await;
    let result = call(&client, "confirm", json!({})).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).starts_with("confirm needs the 2026-07-28 protocol"),
        "{}",
        text(&result)
    );
}
