//! `--conformance`: the fixture vocabulary the MCP conformance suite
//! (`@modelcontextprotocol/conformance`) expects of the server under test —
//! its `test_*` tools, `test://` resources and `test_*` prompts.
//!
//! Payloads are JSON literals shaped like the suite's scenario descriptions,
//! so a reader can compare them line by line; the image and audio are this
//! crate's own 1×1 PNG and four-sample WAV.
//!
//! `test_dynamic_tool` and `test://watched-resource` have no check in the
//! suite; here they give gateway tests a deterministic source of server
//! notifications: each call of the tool bumps the resource's version, sends
//! `notifications/tools/list_changed` and, to a session subscribed to the
//! resource, `notifications/resources/updated`.

// Logging, sampling and elicitation are deprecated by SEP-2577 (2026-07-28),
// but the legacy eras the suite exercises still have them.
#![expect(deprecated)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, CreateMessageRequestParams, ElicitRequestParams, ElicitationSchema,
    GetPromptResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam, ReadResourceResult,
    ResourceUpdatedNotificationParam,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, schemars, tool, tool_router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::SampleServer;

/// A 1×1 PNG.
const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mOQz38NAAIqAXpGbxguAAAAAElFTkSuQmCC";
/// A WAV of four silent 8-bit samples at 8 kHz.
const WAV: &str = "UklGRigAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQQAAACAgICA";

const WATCHED: &str = "test://watched-resource";
/// Pause between the notifications of the logging and progress tools, so a
/// client (or gateway) must stream them rather than batch them with the result.
const STEP: Duration = Duration::from_millis(50);

/// Deserializes a fixture literal into rmcp's type for it.
fn fixture<T: DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value)
        .map_err(|error| McpError::internal_error(format!("malformed fixture: {error}"), None))
}

/// Deserializes a result literal marked `resultType: complete`, as rmcp's
/// constructors mark theirs: 2026-07-28 requires the field, and rmcp strips
/// it for legacy peers.
fn complete<T: DeserializeOwned>(mut result: Value) -> Result<T, McpError> {
    result["resultType"] = json!("complete");
    fixture(result)
}

fn text_result(text: impl Into<String>) -> Result<CallToolResult, McpError> {
    complete(json!({"content": [{"type": "text", "text": text.into()}]}))
}

fn error_result(text: impl Into<String>) -> Result<CallToolResult, McpError> {
    complete(json!({"content": [{"type": "text", "text": text.into()}], "isError": true}))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SamplingArgs {
    /// The prompt to send to the LLM.
    prompt: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ElicitationArgs {
    /// The message to show the user.
    message: String,
}

#[tool_router(router = conformance_tool_router, vis = "pub(super)")]
impl SampleServer {
    #[tool(description = "Returns simple text content")]
    async fn test_simple_text(&self) -> Result<CallToolResult, McpError> {
        text_result("This is a simple text response for testing.")
    }

    #[tool(description = "Returns image content")]
    async fn test_image_content(&self) -> Result<CallToolResult, McpError> {
        complete(json!({"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}))
    }

    #[tool(description = "Returns audio content")]
    async fn test_audio_content(&self) -> Result<CallToolResult, McpError> {
        complete(json!({"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}))
    }

    #[tool(description = "Returns an embedded resource")]
    async fn test_embedded_resource(&self) -> Result<CallToolResult, McpError> {
        complete(json!({"content": [{"type": "resource", "resource": {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content.",
        }}]}))
    }

    #[tool(description = "Returns text, image and resource content together")]
    async fn test_multiple_content_types(&self) -> Result<CallToolResult, McpError> {
        complete(json!({"content": [
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {
                "uri": "test://mixed-content-resource",
                "mimeType": "application/json",
                "text": json!({"test": "data", "value": 123}).to_string(),
            }},
        ]}))
    }

    #[tool(description = "Sends three info log notifications while it runs")]
    async fn test_tool_with_logging(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let steps = [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ];
        for (index, message) in steps.into_iter().enumerate() {
            if index > 0 {
                tokio::time::sleep(STEP).await;
            }
            self.log_to_client(&context, LoggingLevel::Info, message)
                .await;
        }
        text_result("Tool with logging executed successfully")
    }

    #[tool(description = "Sends progress 0, 50 and 100 of 100 while it runs")]
    async fn test_tool_with_progress(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let Some(token) = context.meta.get_progress_token() else {
            return text_result("no progressToken in the request, so no progress to report");
        };
        for progress in [0, 50, 100] {
            if progress > 0 {
                tokio::time::sleep(STEP).await;
            }
            let notification: ProgressNotificationParam = fixture(json!({
                "progressToken": token,
                "progress": progress,
                "total": 100,
                "message": format!("Completed step {progress} of 100"),
            }))?;
            // A client that went away cannot be told; the result still stands.
            let _ = context.peer.notify_progress(notification).await;
        }
        text_result("Tool with progress executed successfully")
    }

    #[tool(description = "Always fails with isError: true")]
    async fn test_error_handling(&self) -> Result<CallToolResult, McpError> {
        error_result("This tool intentionally returns an error for testing")
    }

    #[tool(description = "Asks the client's LLM (sampling/createMessage)")]
    async fn test_sampling(
        &self,
        Parameters(SamplingArgs { prompt }): Parameters<SamplingArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let request: CreateMessageRequestParams = fixture(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
            "maxTokens": 100,
        }))?;
        match context.peer.create_message(request).await {
            Ok(reply) => {
                let reply = serde_json::to_value(reply).unwrap_or_default();
                let text = reply["content"]["text"].as_str().unwrap_or("(no text)");
                text_result(format!("LLM response: {text}"))
            }
            Err(error) => error_result(format!("sampling failed: {error}")),
        }
    }

    #[tool(description = "Asks the user for a username and email (elicitation/create)")]
    async fn test_elicitation(
        &self,
        Parameters(ElicitationArgs { message }): Parameters<ElicitationArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let schema = json!({
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        });
        elicit(&context, &message, schema, "User response").await
    }

    #[tool(description = "Elicitation whose fields carry defaults (SEP-1034)")]
    async fn test_elicitation_sep1034_defaults(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {
                    "type": "boolean",
                    "description": "Verification status",
                    "default": true,
                },
            },
        });
        let message = "Please review and update the form fields with defaults";
        elicit(&context, message, schema, "Elicitation completed").await
    }

    #[tool(description = "Elicitation with the five enum shapes (SEP-1330)")]
    async fn test_elicitation_sep1330_enums(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let options = |prefix: &str, titles: [&str; 3]| -> Vec<Value> {
            (1..=3)
                .zip(titles)
                .map(|(n, title)| json!({"const": format!("{prefix}{n}"), "title": title}))
                .collect()
        };
        let schema = json!({
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string",
                    "description": "Select one option",
                    "enum": ["option1", "option2", "option3"],
                },
                "titledSingle": {
                    "type": "string",
                    "description": "Select one option with titles",
                    "oneOf": options("value", ["First Option", "Second Option", "Third Option"]),
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Select one option (legacy)",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Select multiple options",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Select multiple options with titles",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {
                        "anyOf": options("value", ["First Choice", "Second Choice", "Third Choice"]),
                    },
                },
            },
        });
        let message = "Please select options from the enum fields";
        elicit(&context, message, schema, "Elicitation completed").await
    }

    #[tool(
        description = "Bumps test://watched-resource, sends tools/list_changed and, if subscribed, resources/updated"
    )]
    async fn test_dynamic_tool(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let version = self.shared.watched_version.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = context.peer.notify_tool_list_changed().await;
        if self.session.is_subscribed(WATCHED) {
            let updated: ResourceUpdatedNotificationParam = fixture(json!({"uri": WATCHED}))?;
            let _ = context.peer.notify_resource_updated(updated).await;
        }
        text_result(format!("{WATCHED} is now at version {version}"))
    }
}

impl SampleServer {
    /// Sends `notifications/message` unless the session's `logging/setLevel`
    /// filters it out.
    async fn log_to_client(
        &self,
        context: &RequestContext<RoleServer>,
        level: LoggingLevel,
        message: &str,
    ) {
        if (level as u8) < (self.session.log_level() as u8) {
            return;
        }
        let mut notification = LoggingMessageNotificationParam::new(level, json!(message));
        notification.logger = Some(self.name().to_owned());
        let _ = context.peer.notify_logging_message(notification).await;
    }
}

/// Sends `elicitation/create` and reports the user's answer as text.
async fn elicit(
    context: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
    label: &str,
) -> Result<CallToolResult, McpError> {
    let requested_schema: ElicitationSchema = fixture(schema)?;
    let request = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: message.to_owned(),
        requested_schema,
    };
    match context.peer.create_elicitation(request).await {
        Ok(answer) => {
            let action = serde_json::to_value(&answer.action).unwrap_or_default();
            let action = action.as_str().unwrap_or("unknown");
            let content = answer.content.unwrap_or_else(|| json!({}));
            text_result(format!("{label}: action={action}, content={content}"))
        }
        Err(error) => error_result(format!("elicitation failed: {error}")),
    }
}

/// `resources/list`.
pub(super) fn resources() -> Result<ListResourcesResult, McpError> {
    complete(json!({"resources": [
        {"uri": "test://static-text", "name": "static-text", "mimeType": "text/plain",
         "description": "A static text resource"},
        {"uri": "test://static-binary", "name": "static-binary", "mimeType": "image/png",
         "description": "A static binary resource (a 1×1 PNG)"},
        {"uri": WATCHED, "name": "watched-resource", "mimeType": "text/plain",
         "description": "Changes on every test_dynamic_tool call; subscribe to hear of it"},
    ]}))
}

/// `resources/templates/list`.
pub(super) fn resource_templates() -> Result<ListResourceTemplatesResult, McpError> {
    complete(json!({"resourceTemplates": [
        {"uriTemplate": "test://template/{id}/data", "name": "template",
         "mimeType": "application/json", "description": "Data for the given id"},
    ]}))
}

/// `resources/read`; `watched_version` is the watched resource's version.
pub(super) fn read_resource(
    uri: &str,
    watched_version: u64,
) -> Result<ReadResourceResult, McpError> {
    let contents = match uri {
        "test://static-text" => json!({"uri": uri, "mimeType": "text/plain",
            "text": "This is the content of the static text resource."}),
        "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG}),
        WATCHED => json!({"uri": uri, "mimeType": "text/plain",
            "text": format!("Watched resource content, version {watched_version}")}),
        _ => match uri
            .strip_prefix("test://template/")
            .and_then(|rest| rest.strip_suffix("/data"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            Some(id) => json!({"uri": uri, "mimeType": "application/json",
                "text": json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")})
                    .to_string()}),
            None => {
                return Err(McpError::resource_not_found(
                    format!("no resource {uri}"),
                    Some(json!({"uri": uri})),
                ));
            }
        },
    };
    complete(json!({"contents": [contents]}))
}

/// `prompts/list`.
pub(super) fn prompts() -> Result<ListPromptsResult, McpError> {
    complete(json!({"prompts": [
        {"name": "test_simple_prompt", "description": "A prompt without arguments"},
        {"name": "test_prompt_with_arguments", "description": "A prompt with two arguments",
         "arguments": [
            {"name": "arg1", "description": "First test argument", "required": true},
            {"name": "arg2", "description": "Second test argument", "required": true},
         ]},
        {"name": "test_prompt_with_embedded_resource",
         "description": "A prompt that embeds the resource it is given",
         "arguments": [
            {"name": "resourceUri", "description": "URI of the resource to embed",
             "required": true},
         ]},
        {"name": "test_prompt_with_image", "description": "A prompt with an image"},
    ]}))
}

/// `prompts/get`.
pub(super) fn prompt(
    name: &str,
    arguments: Option<&Map<String, Value>>,
) -> Result<GetPromptResult, McpError> {
    let argument = |key: &str| -> Result<String, McpError> {
        match arguments.and_then(|arguments| arguments.get(key)) {
            Some(Value::String(value)) => Ok(value.clone()),
            _ => Err(McpError::invalid_params(
                format!("prompt {name} needs the string argument {key}"),
                None,
            )),
        }
    };
    let user = |content: Value| json!({"role": "user", "content": content});
    let messages = match name {
        "test_simple_prompt" => vec![user(json!({"type": "text",
            "text": "This is a simple prompt for testing."}))],
        "test_prompt_with_arguments" => {
            let (arg1, arg2) = (argument("arg1")?, argument("arg2")?);
            vec![user(json!({"type": "text",
                "text": format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")}))]
        }
        "test_prompt_with_embedded_resource" => vec![
            user(
                json!({"type": "resource", "resource": {"uri": argument("resourceUri")?,
                "mimeType": "text/plain", "text": "Embedded resource content for testing."}}),
            ),
            user(json!({"type": "text", "text": "Please process the embedded resource above."})),
        ],
        "test_prompt_with_image" => vec![
            user(json!({"type": "image", "data": PNG, "mimeType": "image/png"})),
            user(json!({"type": "text", "text": "Please analyze the image above."})),
        ],
        _ => return Err(McpError::invalid_params(format!("no prompt {name}"), None)),
    };
    complete(json!({"messages": messages}))
}

/// The fixture tools, for `--conformance`.
pub(super) fn tools() -> ToolRouter<SampleServer> {
    SampleServer::conformance_tool_router()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every literal must fit rmcp's types; a typo would otherwise surface as
    /// an internal error in the middle of a conformance run.
    #[test]
    fn fixtures_deserialize() {
        resources().unwrap();
        resource_templates().unwrap();
        prompts().unwrap();
        for uri in [
            "test://static-text",
            "test://static-binary",
            WATCHED,
            "test://template/123/data",
        ] {
            read_resource(uri, 1).unwrap();
        }
        assert!(read_resource("test://template//data", 1).is_err());
        let arguments = json!({"arg1": "a", "arg2": "b", "resourceUri": "test://x"});
        for name in [
            "test_simple_prompt",
            "test_prompt_with_arguments",
            "test_prompt_with_embedded_resource",
            "test_prompt_with_image",
        ] {
            prompt(name, arguments.as_object()).unwrap();
        }
        assert_eq!(tools().list_all().len(), 13);
    }
}
