//! The JSON-RPC 2.0 pieces both the link and the gateway answer with.

/// The error codes JSON-RPC 2.0 defines.
pub mod code {
    /// The message is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a JSON-RPC request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The method's parameters are wrong.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The peer failed while answering.
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// A JSON-RPC error response, as bytes.
pub fn error_body(id: Option<&serde_json::Value>, code: i64, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(&serde_json::Value::Null),
        "error": { "code": code, "message": message },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}
