//! MRTR pins (MCP 2026-07-28): a stateless `tools/call`, `prompts/get` or
//! `resources/read` may be answered `input_required` with an opaque `requestState`;
//! the client then retries with that state echoed. The retry must reach the revision
//! (and, when it is still there, the instance) that issued the state — a canary's
//! state means nothing to the stable revision. The gateway remembers which upstream
//! issued each state it relays, for a while, and routes retries carrying it there.
//! States are remembered per server: a state learnt from one server never steers a
//! request to another.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long a client has to retry.
const TTL: Duration = Duration::from_secs(10 * 60);
/// States remembered at once; past this the oldest go first.
const CAPACITY: usize = 10_000;

/// Where a retry carrying a `requestState` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pinned {
    pub(crate) server: Arc<str>,
    pub(crate) revision: u64,
    pub(crate) instance: String,
}

/// (server, `requestState`).
type StateKey = (Arc<str>, String);

#[derive(Debug, Default)]
pub(crate) struct Pins {
    /// Where each state was issued, and when.
    states: Mutex<HashMap<StateKey, (Pinned, Instant)>>,
}

impl Pins {
    /// Remembers the `requestState` of `response` (one JSON-RPC message), if it asks
    /// for input; returns that state and where it was pinned.
    pub(crate) fn learn(
        &self,
        response: &[u8],
        pin: impl FnOnce() -> Pinned,
    ) -> Option<(String, Pinned)> {
        // Most answers are not MRTR: skip them without parsing.
        if !mentions_input_required(response) {
            return None;
        }
        #[derive(Deserialize)]
        struct Response {
            result: Option<InputRequired>,
        }
        #[derive(Deserialize)]
        struct InputRequired {
            #[serde(rename = "resultType")]
            result_type: Option<String>,
            #[serde(rename = "requestState")]
            request_state: Option<String>,
        }
        let Ok(Response {
            result:
                Some(InputRequired {
                    result_type: Some(kind),
                    request_state: Some(state),
                }),
        }) = serde_json::from_slice(response)
        else {
            return None;
        };
        if kind != "input_required" {
            return None;
        }
        let now = Instant::now();
        let mut states = self.states.lock();
        if states.len() >= CAPACITY {
            states.retain(|_, (_, at)| now.duration_since(*at) < TTL);
            if states.len() >= CAPACITY
                && let Some(oldest) = states
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(key, _)| key.clone())
            {
                states.remove(&oldest);
            }
        }
        let pin = pin();
        states.insert((Arc::clone(&pin.server), state.clone()), (pin.clone(), now));
        Some((state, pin))
    }

    /// Where the retry to `server` carrying `state` goes, if the gateway relayed that
    /// state from that server.
    pub(crate) fn get(&self, server: &str, state: &str) -> Option<Pinned> {
        let states = self.states.lock();
        states
            .get(&(Arc::from(server), state.to_owned()))
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(pin, _)| pin.clone())
    }
}

/// Whether `bytes` may hold an MRTR answer (a cheap test before parsing).
pub(crate) fn mentions_input_required(bytes: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"input_required";
    bytes.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_required_answers_pin_their_state() {
        let pins = Pins::default();
        let pin = || Pinned {
            server: Arc::from("api"),
            revision: 2,
            instance: "canary-0".into(),
        };
        pins.learn(br#"{"id":1,"result":{"content":[]}}"#, pin);
        pins.learn(
            br#"{"id":1,"result":{"resultType":"input_required","inputRequests":{},"requestState":"s1"}}"#,
            pin,
        );
        assert_eq!(pins.get("api", "s1"), Some(pin()));
        assert_eq!(pins.get("api", "other"), None);
        // Another server's retry carrying the same state is routed as any request.
        assert_eq!(pins.get("billing", "s1"), None);
    }
}
