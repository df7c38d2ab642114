//! Who may act over the admin TCP listener: the holder of an admin token of the running
//! fleet (`admin.tokens`, matched like the gateway's tokens by
//! [`fleet_gateway::presented_token`]), from no web page but the listener's own. What
//! reads on that listener needs no token (it stays on loopback); the unix socket needs none
//! (its file mode is the check).

use crate::api::{ApiFailure, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Who an action over TCP comes from, as its events, history and log line name them:
/// `admin:<token name>`, never the token.
#[derive(Debug, Clone)]
pub(crate) struct Actor(pub(crate) String);

/// Lets an action through with an admin token of the running fleet, from the listener's own
/// origin or none: 403 for another origin or a fleet without admin tokens, 401 (with a
/// Bearer challenge) without a token that is one of them.
pub(crate) async fn admin_only(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = foreign_origin(request.headers()) {
        return ApiFailure(
            StatusCode::FORBIDDEN,
            format!(
                "an action over the admin listener must come from its own pages, not from `{origin}`"
            ),
        )
        .into_response();
    }
    let tokens = state
        .deployer
        .current_fleet()
        .map(|fleet| fleet.admin.tokens.clone())
        .unwrap_or_default();
    if tokens.is_empty() {
        return ApiFailure(
            StatusCode::FORBIDDEN,
            "actions over TCP need admin.tokens in the fleet file: create one with `mcpfleet token create NAME --admin`, add its line under `admin.tokens` and deploy (or use the commands, over the unix socket)".into(),
        )
        .into_response();
    }
    // Validation let only 64-hex hashes into the fleet.
    let known: Vec<(&str, [u8; 32])> = tokens
        .iter()
        .filter_map(|t| Some((t.name.as_str(), fleet_gateway::decode_hex32(&t.sha256)?)))
        .collect();
    let Some(index) =
        fleet_gateway::presented_token(request.headers(), known.iter().map(|(_, h)| h))
    else {
        let mut refused = ApiFailure(
            StatusCode::UNAUTHORIZED,
            "this action needs an admin token (`Authorization: Bearer <token>`; a gateway token is not one): create one with `mcpfleet token create NAME --admin` and add its line under `admin.tokens`".into(),
        )
        .into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mcpfleet admin\""),
        );
        return refused;
    };
    let actor = Actor(format!("admin:{}", known[index].0));
    tracing::info!(
        "{} asked for {} {} over the admin listener",
        actor.0,
        request.method(),
        request.uri().path()
    );
    request.extensions_mut().insert(actor);
    next.run(request).await
}

/// The request's `Origin` when it is present and not the listener's own (`http://` and the
/// `Host` asked for, which the listener has checked is loopback): a page elsewhere that
/// tries to drive an action (cross-site request forgery), or an opaque `null` origin.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let own = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(|host| format!("http://{host}"));
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    match own {
        Some(own) if origin.eq_ignore_ascii_case(&own) => None,
        _ => Some(origin),
    }
}

#[cfg(test)]
mod tests {
    use super::foreign_origin;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn only_the_listeners_own_pages_or_no_browser_may_act() {
        for (host, origin) in [
            ("127.0.0.1:7471", None),
            ("127.0.0.1:7471", Some("http://127.0.0.1:7471")),
            ("localhost:7471", Some("http://LOCALHOST:7471")),
            ("[::1]:7471", Some("http://[::1]:7471")),
        ] {
            assert_eq!(foreign_origin(&headers(host, origin)), None, "{origin:?}");
        }
        for (host, origin) in [
            ("127.0.0.1:7471", "http://127.0.0.1:3000"),
            ("127.0.0.1:7471", "http://localhost:7471"),
            ("127.0.0.1:7471", "https://127.0.0.1:7471"),
            ("127.0.0.1:7471", "http://evil.example"),
            ("127.0.0.1:7471", "null"),
        ] {
            assert_eq!(
                foreign_origin(&headers(host, Some(origin))).as_deref(),
                Some(origin)
            );
        }
    }
}
