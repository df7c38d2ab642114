//! The WebSocket upgrade the API server's streaming subresources (`pods/attach`,
//! `pods/portforward`) share: the handshake's checks, the subprotocol chosen from what the
//! client offers, the `101 Switching Protocols` answer, and the upgraded connection as a
//! server-side WebSocket.

use super::status;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The server's side of an upgraded connection.
pub(super) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A WebSocket request the fake accepts, before it answers.
pub(super) struct Upgrade {
    key: HeaderValue,
    protocol: &'static str,
    upgrade: hyper::upgrade::OnUpgrade,
}

impl Upgrade {
    /// Checks that `request` asks for a WebSocket speaking one of `protocols` (the fake's
    /// preference first); the error is the API server's answer (boxed: a response is
    /// large beside the upgrade). `what` names the subresource in it.
    pub(super) fn from_request(
        request: &mut Request,
        protocols: &[&'static str],
        what: &str,
    ) -> Result<Upgrade, Box<Response>> {
        let bad = |message: &str| Box::new(status(StatusCode::BAD_REQUEST, "BadRequest", message));
        let headers = request.headers();
        let is_upgrade = (headers.get(header::UPGRADE))
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(bad(&format!(
                "{what} is a WebSocket: Sec-WebSocket-Key is missing"
            )));
        };
        let offered = (headers.get(header::SEC_WEBSOCKET_PROTOCOL))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(protocol) =
            (protocols.iter().copied()).find(|p| offered.split(',').any(|o| o.trim() == *p))
        else {
            return Err(bad(&format!(
                "the fake serves {what} over {}, not `{offered}`",
                protocols.join(" or ")
            )));
        };
        if !is_upgrade {
            return Err(bad(&format!("{what} needs `Upgrade: websocket`")));
        }
        let Some(upgrade) = request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
        else {
            return Err(bad("the connection cannot be upgraded"));
        };
        Ok(Upgrade {
            key,
            protocol,
            upgrade,
        })
    }

    /// Answers `101 Switching Protocols`, and runs `session` on the WebSocket once the
    /// connection is upgraded.
    pub(super) fn accept<F, Fut>(self, session: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let upgrade = self.upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            session(socket).await;
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let out = response.headers_mut();
        out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            out.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        out.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(self.protocol),
        );
        response
    }
}
