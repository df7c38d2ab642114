//! Tool calls: every `tools/call` through the gateway is counted per (server, revision,
//! tool, outcome) and, when an audit sink is configured, recorded — who (the token's
//! name), what (server, revision, tool), how it ended and how long it took. Never the
//! arguments or the result.
//!
//! The outcome needs the response: a JSON body is read as it is; for an SSE answer
//! the relay keeps the bytes of a `tools/call` stream (bounded) and reads its final
//! response event when the stream ends.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use fleet_routes::audit::{ToolCallRecord, ToolOutcome};
use tokio::sync::mpsc;

use crate::distribution::Target;
use crate::skim::{Kind, Skim};

/// Where audit records go.
pub type AuditSink = mpsc::UnboundedSender<ToolCallRecord>;

/// Most bytes of an SSE `tools/call` answer kept to find its outcome.
const SCAN_LIMIT: usize = 1024 * 1024;
/// Room made for an answer's first bytes (most answers are smaller).
const FIRST_RESERVE: usize = 1024;

/// The outcome a JSON-RPC response says; `None` when the message is no response: not one
/// JSON object, no id (or a null one), a method (a request or notification), or a member
/// of these four twice. Read by a [`Skim`]: the result's other members (the content) are
/// only checked, never visited.
fn response_outcome(message: &[u8]) -> Option<ToolOutcome> {
    let mut skim = Skim::new(message)?;
    let (mut id, mut method, mut error) = (None, None, None);
    // Seen, and what it says (`None`: null).
    let mut result: Option<Option<ToolOutcome>> = None;
    skim.members(|skim, name| {
        let slot = match name {
            "id" => &mut id,
            "method" => &mut method,
            "error" => &mut error,
            "result" if result.is_none() => {
                result = Some(result_outcome(skim)?);
                return Some(());
            }
            "result" => return None,
            _ => return skim.value().map(drop),
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(skim.value()?);
        Some(())
    })?;
    if !skim.at_end() {
        return None;
    }
    let given = |member: Option<Kind>| member.is_some_and(|kind| kind != Kind::Null);
    if !given(id) || given(method) {
        return None;
    }
    Some(if given(error) {
        ToolOutcome::JsonRpcError
    } else {
        result.flatten().unwrap_or(ToolOutcome::TransportError)
    })
}

/// What the result that comes next says: `None` when it is null; a transport error when
/// it is no object, or its `isError` is no boolean.
fn result_outcome(skim: &mut Skim<'_>) -> Option<Option<ToolOutcome>> {
    if !skim.next_is_object() {
        return Some(match skim.value()? {
            Kind::Null => None,
            _ => Some(ToolOutcome::TransportError),
        });
    }
    let mut is_error = None;
    skim.members(|skim, name| {
        if name != "isError" {
            return skim.value().map(drop);
        }
        if is_error.is_some() {
            return None;
        }
        is_error = Some(skim.value()?);
        Some(())
    })?;
    Some(Some(match is_error {
        Some(Kind::True) => ToolOutcome::ToolError,
        None | Some(Kind::False | Kind::Null) => ToolOutcome::Ok,
        Some(_) => ToolOutcome::TransportError,
    }))
}

/// The outcome a JSON-RPC response message says.
pub(crate) fn outcome_of_response(message: &[u8]) -> ToolOutcome {
    response_outcome(message).unwrap_or(ToolOutcome::TransportError)
}

/// The outcome of an SSE answer: its last event that is a response.
pub(crate) fn outcome_of_sse(stream: &[u8]) -> ToolOutcome {
    last_response(stream).map_or(ToolOutcome::TransportError, |(_, outcome)| outcome)
}

/// The data of the last event of an SSE stream that is a JSON-RPC response.
pub(crate) fn sse_response(stream: &[u8]) -> Option<String> {
    last_response(stream).map(|(data, _)| String::from_utf8_lossy(&data).into_owned())
}

/// The last event of an SSE stream that is a JSON-RPC response: its data, and the
/// outcome it says (every answer is judged by it: parsed once).
fn last_response(stream: &[u8]) -> Option<(Cow<'_, [u8]>, ToolOutcome)> {
    if stream.contains(&b'\r') {
        // Only a stream with CR LF line ends pays for a copy.
        let lf = String::from_utf8_lossy(stream).replace("\r\n", "\n");
        return last_response_lf(lf.as_bytes())
            .map(|(data, outcome)| (Cow::Owned(data.into_owned()), outcome));
    }
    last_response_lf(stream)
}

/// [`last_response`] of a stream whose lines end in LF. From the end: the response is
/// nearly always the last event, so the events before it (priming, progress) are not
/// parsed at all.
fn last_response_lf(stream: &[u8]) -> Option<(Cow<'_, [u8]>, ToolOutcome)> {
    let mut end = stream.len();
    loop {
        let start = after_last_blank_line(&stream[..end]);
        if let Some(found) = response_event(&stream[start..end]) {
            return Some(found);
        }
        if start == 0 {
            return None;
        }
        end = start - 2;
    }
}

/// Where the last event of `stream` (LF line ends) begins: after its last blank line, or
/// at 0.
fn after_last_blank_line(stream: &[u8]) -> usize {
    let mut end = stream.len();
    while let Some(lf) = memchr::memrchr(b'\n', &stream[..end]) {
        if lf > 0 && stream[lf - 1] == b'\n' {
            return lf + 1;
        }
        end = lf;
    }
    0
}

/// The data of an event, when it is a JSON-RPC response. Borrowed when the event has one
/// `data:` line, as nearly every answer does: nothing is copied.
fn response_event(event: &[u8]) -> Option<(Cow<'_, [u8]>, ToolOutcome)> {
    let mut lines = lines(event)
        .filter_map(|line| line.strip_prefix(b"data:"))
        .map(|data| data.strip_prefix(b" ").unwrap_or(data));
    let first = lines.next()?;
    let data = match lines.next() {
        None => Cow::Borrowed(first),
        Some(second) => {
            let mut joined = [first, second].join(&b'\n');
            for more in lines {
                joined.push(b'\n');
                joined.extend_from_slice(more);
            }
            Cow::Owned(joined)
        }
    };
    let outcome = response_outcome(&data)?;
    Some((data, outcome))
}

/// The lines of `text` (LF ends), as `split` gives them, found by `memchr`.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b'\n', current) {
            Some(lf) => {
                rest = Some(&current[lf + 1..]);
                Some(&current[..lf])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// A `tools/call` on its way: finished once, by whoever sees its end.
#[derive(Debug)]
pub(crate) struct ToolCall {
    pub(crate) server: String,
    pub(crate) tool: String,
    pub(crate) token: Option<String>,
    pub(crate) started: Instant,
    pub(crate) sink: Option<AuditSink>,
}

impl ToolCall {
    pub(crate) fn finish(self, target: &Target, outcome: ToolOutcome) {
        target.metrics.record_tool(&self.tool, outcome);
        if let Some(sink) = &self.sink {
            let record = ToolCallRecord {
                time: SystemTime::now(),
                token: self.token,
                server: self.server,
                revision: target.revision,
                tool: self.tool,
                outcome,
                duration: self.started.elapsed(),
            };
            let _ = sink.send(record);
        }
    }
}

/// The bytes of an SSE `tools/call` answer, kept to find its outcome at the end.
#[derive(Debug, Default)]
pub(crate) struct SseScan {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl SseScan {
    pub(crate) fn push(&mut self, frame: &[u8]) {
        if self.bytes.capacity() == 0 {
            // Room for a usual answer at once: its pieces (a priming event, the
            // response) grew the buffer twice.
            self.bytes
                .reserve(frame.len().clamp(FIRST_RESERVE, SCAN_LIMIT));
        }
        if self.bytes.len() + frame.len() > SCAN_LIMIT {
            // Keep the tail: the response is the last event.
            self.overflowed = true;
            self.bytes.clear();
        }
        self.bytes
            .extend_from_slice(&frame[frame.len().saturating_sub(SCAN_LIMIT)..]);
    }

    /// The stream's response message, if it had one (and was not too large).
    pub(crate) fn response(&self) -> Option<String> {
        sse_response(&self.bytes)
    }

    pub(crate) fn outcome(&self) -> ToolOutcome {
        let outcome = outcome_of_sse(&self.bytes);
        if outcome == ToolOutcome::TransportError && self.overflowed {
            // Too large to judge; it did end normally.
            ToolOutcome::Ok
        } else {
            outcome
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lines_are_found_as_split_finds_them(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..64),
        ) {
            let found: Vec<&[u8]> = lines(&text).collect();
            let split: Vec<&[u8]> = text.split(|&byte| byte == b'\n').collect();
            prop_assert_eq!(found, split);
        }

        #[test]
        fn any_stream_is_scanned_without_panicking(
            stream in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<usize>(),
        ) {
            let outcome = outcome_of_sse(&stream);
            prop_assert!(ToolOutcome::ALL.contains(&outcome));
            let cut = cut % (stream.len() + 1);
            let mut scan = SseScan::default();
            scan.push(&stream[..cut]);
            scan.push(&stream[cut..]);
            prop_assert_eq!(scan.response(), sse_response(&stream));
            prop_assert_eq!(scan.outcome(), outcome);
        }

        #[test]
        fn the_response_of_an_event_stream_is_read_faithfully(
            notes in proptest::collection::vec(any::<String>(), 0..4),
            id in any::<i64>(),
            is_error in any::<Option<bool>>(),
            crlf in any::<bool>(),
            chunk in 1_usize..64,
        ) {
            let mut stream = String::new();
            for note in &notes {
                let message = serde_json::json!({
                    "jsonrpc": "2.0", "method": "notifications/message",
                    "params": { "data": note },
                });
                stream.push_str(&format!("event: message\ndata: {message}\n\n"));
            }
            let mut result = serde_json::json!({ "content": [] });
            if let Some(is_error) = is_error {
                result["isError"] = is_error.into();
            }
            let response =
                serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string();
            stream.push_str(&format!("id: 1\nevent: message\ndata: {response}\n\n"));
            if crlf {
                stream = stream.replace('\n', "\r\n");
            }
            let mut scan = SseScan::default();
            for piece in stream.as_bytes().chunks(chunk) {
                scan.push(piece);
            }
            prop_assert_eq!(scan.response(), Some(response));
            let expected = if is_error == Some(true) {
                ToolOutcome::ToolError
            } else {
                ToolOutcome::Ok
            };
            prop_assert_eq!(scan.outcome(), expected);
        }
    }

    #[test]
    fn the_response_is_the_last_response_event_whatever_the_line_ends() {
        let response = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#;
        let lf = format!(
            "id: 1\ndata: \n\nevent: message\ndata: {{\"method\":\"notifications/progress\"}}\n\nevent: message\ndata: {response}\n\n"
        );
        assert_eq!(sse_response(lf.as_bytes()).as_deref(), Some(response));
        let crlf = lf.replace('\n', "\r\n");
        assert_eq!(sse_response(crlf.as_bytes()).as_deref(), Some(response));
        // A notification after the response does not hide it.
        let later =
            format!("{lf}event: message\ndata: {{\"method\":\"notifications/message\"}}\n\n");
        assert_eq!(sse_response(later.as_bytes()).as_deref(), Some(response));
        // Data lines of one event are joined with LF (a JSON value may span them).
        let split = b"data: {\"id\":1,\ndata: \"result\":{\"isError\":true}}\n\n";
        assert_eq!(
            sse_response(split).as_deref(),
            Some("{\"id\":1,\n\"result\":{\"isError\":true}}")
        );
        assert_eq!(outcome_of_sse(split), ToolOutcome::ToolError);
        assert_eq!(sse_response(b"data: {\"method\":\"x\",\"id\":1}\n\n"), None);
        assert_eq!(sse_response(b"event: message\n\n"), None);
    }

    #[test]
    fn outcomes_are_read_from_json_and_sse() {
        assert_eq!(
            outcome_of_response(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#),
            ToolOutcome::Ok
        );
        assert_eq!(
            outcome_of_response(br#"{"id":1,"result":{"content":[],"isError":true}}"#),
            ToolOutcome::ToolError
        );
        assert_eq!(
            outcome_of_response(br#"{"id":1,"error":{"code":-1,"message":"x"}}"#),
            ToolOutcome::JsonRpcError
        );
        // `isError` is read wherever it stands, however its name is written, and only as
        // the result's own member.
        assert_eq!(
            outcome_of_response(
                br#"{"id":1,"result":{"content":[{"type":"text","text":"isError"}],"isError":true}}"#
            ),
            ToolOutcome::ToolError
        );
        assert_eq!(
            outcome_of_response(br#"{"id":1,"result":{"is\u0045rror":true}}"#),
            ToolOutcome::ToolError
        );
        assert_eq!(
            outcome_of_response(
                br#"{"id":1,"result":{"content":[{"isError":true,"text":"a \"quote\""}]}}"#
            ),
            ToolOutcome::Ok
        );
        assert_eq!(
            outcome_of_response(br#"{"id":1,"result":{"isError":false}}"#),
            ToolOutcome::Ok
        );
        // A result that is no object, or says `isError` in no boolean, is no answer.
        assert_eq!(
            outcome_of_response(br#"{"id":1,"result":5}"#),
            ToolOutcome::TransportError
        );
        assert_eq!(
            outcome_of_response(br#"{"id":1,"result":{"isError":"yes"}}"#),
            ToolOutcome::TransportError
        );
        assert_eq!(
            outcome_of_response(br#"{"id":1,"result":null}"#),
            ToolOutcome::TransportError
        );
        let sse = b"id: 1\ndata: \n\nevent: message\ndata: {\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\ndata: {\"id\":1,\"result\":{\"isError\":true}}\n\n";
        assert_eq!(outcome_of_sse(sse), ToolOutcome::ToolError);
        assert_eq!(
            outcome_of_sse(b"data: {\"method\":\"x\"}\n\n"),
            ToolOutcome::TransportError
        );
    }
}
