//! A stdio session's side of its link: which of its requests wait for what, where the
//! messages go that belong to no request, and the recent events kept for resumption.
//!
//! Every stream of a session is numbered — 0 is the GET stream, each request's answer
//! stream gets the next number — and every event gets a session-wide number; its SSE id
//! is `<stream>-<number>`. A client whose answer stream broke sends `GET` with
//! `Last-Event-ID`: the gateway replays what that stream carried after the id (from the
//! last [`REPLAY`] events of the session) and, if the request is still open, goes on
//! with it until its response.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::fmt;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::jsonrpc;
use crate::jsonrpc::code;
use crate::link::id_key;

/// Events kept per session for `Last-Event-ID`.
const REPLAY: usize = 256;
/// Events waiting for one stream's reader (a replay always fits). A reader that falls
/// further behind loses the stream, not the events: they stay in the replay log, and
/// the client resumes with `Last-Event-ID`. Nothing the server says ever waits on a
/// slow client (on a shared process that would stall every session).
const STREAM_BUFFER: usize = REPLAY;
/// Messages kept for a session without an open GET stream.
const BACKLOG: usize = 128;
/// The GET stream's number.
const STANDALONE: u64 = 0;

/// What a message from the server is to a session.
#[derive(Debug)]
pub enum Routed {
    /// The response to the session's request `key`.
    Response { key: String, message: Bytes },
    /// Progress for the session's request with progress token `token`.
    Progress { token: String, message: Bytes },
    /// A server→client request or a log message: for the newest request's stream.
    Related(Bytes),
    /// Anything else: for the session's GET stream.
    Unrelated(Bytes),
}

/// Where an event sits in a session: `<stream>-<number>` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub stream: u64,
    pub number: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.stream, self.number)
    }
}

impl EventId {
    /// An id this gateway wrote, from a `Last-Event-ID` header.
    pub fn parse(text: &str) -> Option<Self> {
        let (stream, number) = text.split_once('-')?;
        Some(Self {
            stream: stream.parse().ok()?,
            number: number.parse().ok()?,
        })
    }
}

/// One event of a session's stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub message: Bytes,
    /// The response that ends its request's stream.
    pub last: bool,
}

/// An answer stream: its number and its events.
#[derive(Debug)]
pub struct Stream {
    pub number: u64,
    pub events: mpsc::Receiver<Event>,
}

/// A session's side of a link.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<HubState>,
}

#[derive(Debug, Default)]
struct HubState {
    next_stream: u64,
    next_number: u64,
    requests: HashMap<String, Slot>,
    /// Progress token key → request key.
    tokens: HashMap<String, String>,
    standalone: Option<mpsc::Sender<Event>>,
    /// GET-stream events no GET stream has taken yet.
    backlog: VecDeque<Event>,
    /// The session's recent events, every stream, for `Last-Event-ID`.
    log: VecDeque<Event>,
    closed: bool,
    /// A virtual connection's sink: every message goes here, in order, as is.
    raw: Option<mpsc::UnboundedSender<Bytes>>,
}

#[derive(Debug)]
struct Slot {
    stream: u64,
    original: Box<RawValue>,
    /// `None` while its client is away (it may resume).
    sink: Option<mpsc::Sender<Event>>,
}

impl HubState {
    /// Numbers, logs and sends one event of `stream`; `false` when `sink` is gone.
    fn emit(
        &mut self,
        stream: u64,
        message: Bytes,
        last: bool,
        sink: Option<&mpsc::Sender<Event>>,
    ) -> bool {
        self.next_number += 1;
        let event = Event {
            id: EventId {
                stream,
                number: self.next_number,
            },
            message,
            last,
        };
        if self.log.len() == REPLAY {
            self.log.pop_front();
        }
        self.log.push_back(event.clone());
        sink.is_some_and(|sink| sink.try_send(event).is_ok())
    }

    fn send_standalone(&mut self, message: Bytes) {
        let sink = self.standalone.clone();
        if self.emit(STANDALONE, message, false, sink.as_ref()) {
            return;
        }
        self.standalone = None;
        if let Some(event) = self.log.back().cloned() {
            if self.backlog.len() == BACKLOG {
                self.backlog.pop_front();
            }
            self.backlog.push_back(event);
        }
    }

    /// To the request's stream (and the log, for resumption).
    fn send_to_request(&mut self, key: &str, message: Bytes, last: bool) {
        let Some(slot) = self.requests.get(key) else {
            return;
        };
        let (stream, sink) = (slot.stream, slot.sink.clone());
        if last {
            self.requests.remove(key);
            self.tokens.retain(|_, request| request != key);
        }
        if !self.emit(stream, message, last, sink.as_ref())
            && let Some(slot) = self.requests.get_mut(key)
        {
            slot.sink = None;
        }
    }
}

impl Hub {
    pub fn raw(sink: mpsc::UnboundedSender<Bytes>) -> Self {
        Self {
            state: Mutex::new(HubState {
                raw: Some(sink),
                ..HubState::default()
            }),
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, HubState> {
        self.state.lock()
    }

    /// Opens the stream of request `id` (with its progress token): it gets the
    /// request's related messages and ends with its response.
    pub fn begin(&self, id: &RawValue, token: Option<&RawValue>) -> Stream {
        let (sink, events) = mpsc::channel(STREAM_BUFFER);
        let key = id_key(id);
        let mut state = self.state();
        state.next_stream += 1;
        let number = state.next_stream;
        if state.closed {
            let message = lost(id);
            state.emit(number, message, true, Some(&sink));
            return Stream { number, events };
        }
        if let Some(token) = token {
            state.tokens.insert(id_key(token), key.clone());
        }
        state.requests.insert(
            key,
            Slot {
                stream: number,
                original: id.to_owned(),
                sink: Some(sink),
            },
        );
        Stream { number, events }
    }

    /// Forgets request `id` (it failed, or was cancelled): its answer stream ends.
    pub fn end(&self, id: &RawValue) {
        let key = id_key(id);
        let mut state = self.state();
        state.requests.remove(&key);
        state.tokens.retain(|_, request| *request != key);
    }

    /// Opens the session's GET stream, with what was kept for it; `None` when one is
    /// already open.
    pub fn standalone(&self) -> Option<Stream> {
        let mut state = self.state();
        if state.standalone.as_ref().is_some_and(|s| !s.is_closed()) {
            return None;
        }
        let (sink, events) = mpsc::channel(STREAM_BUFFER);
        for event in state.backlog.drain(..) {
            let _ = sink.try_send(event);
        }
        if !state.closed {
            state.standalone = Some(sink);
        }
        Some(Stream {
            number: STANDALONE,
            events,
        })
    }

    /// A `GET` with `Last-Event-ID`: the events of that stream after `after`, then
    /// the rest of it if it is still open. The stream moves here from wherever it was:
    /// a client resumes because its old connection is gone, whether or not the
    /// gateway has noticed yet.
    pub fn resume(&self, after: EventId) -> Stream {
        let mut state = self.state();
        let (sink, events) = mpsc::channel(STREAM_BUFFER);
        for event in state
            .log
            .iter()
            .filter(|e| e.id.stream == after.stream && e.id.number > after.number)
        {
            let _ = sink.try_send(event.clone());
        }
        if after.stream == STANDALONE {
            // The backlog is in the log too: what the client missed was just replayed.
            state.backlog.clear();
            if !state.closed {
                state.standalone = Some(sink);
            }
            return Stream {
                number: STANDALONE,
                events,
            };
        }
        if let Some(slot) = state
            .requests
            .values_mut()
            .find(|slot| slot.stream == after.stream)
        {
            slot.sink = Some(sink);
        }
        // Otherwise the request is answered: the replay ends the stream.
        Stream {
            number: after.stream,
            events,
        }
    }

    /// A message for the GET stream, or kept for it (the oldest dropped past the limit).
    pub fn send_standalone(&self, message: Bytes) {
        self.state().send_standalone(message);
    }

    pub fn deliver(&self, routed: Routed) {
        let mut state = self.state();
        if let Some(raw) = &state.raw {
            let message = match routed {
                Routed::Response { message, .. }
                | Routed::Progress { message, .. }
                | Routed::Related(message)
                | Routed::Unrelated(message) => message,
            };
            let _ = raw.send(message);
            return;
        }
        match routed {
            Routed::Response { key, message } => {
                if state.requests.contains_key(&key) {
                    state.send_to_request(&key, message, true);
                } else {
                    tracing::debug!("response to a request nobody waits for dropped");
                }
            }
            Routed::Progress { token, message } => match state.tokens.get(&token).cloned() {
                Some(key) => state.send_to_request(&key, message, false),
                None => state.send_standalone(message),
            },
            Routed::Related(message) => {
                // The newest request whose client is there to answer.
                let newest = state
                    .requests
                    .iter()
                    .filter(|(_, slot)| slot.sink.as_ref().is_some_and(|s| !s.is_closed()))
                    .max_by_key(|(_, slot)| slot.stream)
                    .map(|(key, _)| key.clone());
                match newest {
                    Some(key) => state.send_to_request(&key, message, false),
                    None => state.send_standalone(message),
                }
            }
            Routed::Unrelated(message) => state.send_standalone(message),
        }
    }

    /// The process is gone: every open request gets a JSON-RPC error, streams end.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.standalone = None;
        state.tokens.clear();
        // Ending the sink ends a virtual connection's reader.
        state.raw = None;
        let slots: Vec<Slot> = state.requests.drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            let message = lost(&slot.original);
            state.emit(slot.stream, message, true, slot.sink.as_ref());
        }
    }
}

fn lost(id: &RawValue) -> Bytes {
    let id = serde_json::from_str::<serde_json::Value>(id.get()).ok();
    Bytes::from(jsonrpc::error_body(
        id.as_ref(),
        code::INTERNAL_ERROR,
        "upstream connection lost: the stdio server's process ended",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn response(id: u64) -> Routed {
        Routed::Response {
            key: id.to_string(),
            message: Bytes::from(format!(r#"{{"id":{id},"result":{{}}}}"#)),
        }
    }

    #[test]
    fn a_broken_answer_stream_resumes_where_it_stopped() {
        let hub = Hub::default();
        let mut first = hub.begin(&raw("7"), Some(&raw(r#""tok""#)));
        let progress = |n: u32| Routed::Progress {
            token: r#""tok""#.to_owned(),
            message: Bytes::from(format!("progress {n}")),
        };
        hub.deliver(progress(1));
        let seen = first.events.try_recv().unwrap();
        assert_eq!(seen.message, "progress 1");
        // The client goes away; the request goes on.
        drop(first);
        hub.deliver(progress(2));
        let mut resumed = hub.resume(seen.id);
        hub.deliver(response(7));
        let replayed: Vec<_> = std::iter::from_fn(|| resumed.events.try_recv().ok()).collect();
        assert_eq!(replayed.len(), 2, "{replayed:?}");
        assert_eq!(replayed[0].message, "progress 2");
        assert!(replayed[1].last);
        assert_eq!(replayed[1].id.stream, seen.id.stream);
        // Asked again after the response: the log still has it, then the stream ends.
        let mut again = hub.resume(seen.id);
        assert_eq!(again.events.try_recv().unwrap().message, "progress 2");
        assert!(again.events.try_recv().unwrap().last);
        assert!(again.events.try_recv().is_err());
    }

    #[test]
    fn a_reader_that_falls_behind_loses_its_stream_not_the_events() {
        let hub = Hub::default();
        let mut stream = hub.begin(&raw("1"), Some(&raw(r#""tok""#)));
        for n in 0..STREAM_BUFFER + 10 {
            hub.deliver(Routed::Progress {
                token: r#""tok""#.to_owned(),
                message: Bytes::from(format!("progress {n}")),
            });
        }
        hub.deliver(response(1));
        // Nothing waited on the reader: it holds what fit, then its stream ends.
        let got: Vec<Event> = std::iter::from_fn(|| stream.events.try_recv().ok()).collect();
        assert_eq!(got.len(), STREAM_BUFFER);
        assert_eq!(
            stream.events.try_recv().unwrap_err(),
            mpsc::error::TryRecvError::Disconnected
        );
        // Resuming where it stopped gives the rest, up to the response.
        let mut resumed = hub.resume(got.last().unwrap().id);
        let rest: Vec<Event> = std::iter::from_fn(|| resumed.events.try_recv().ok()).collect();
        assert_eq!(rest.len(), 11, "{rest:?}");
        assert_eq!(rest[0].message, format!("progress {STREAM_BUFFER}"));
        assert!(rest[10].last);
    }

    #[test]
    fn get_stream_messages_wait_for_the_stream_and_ids_round_trip() {
        let hub = Hub::default();
        hub.send_standalone(Bytes::from_static(b"early"));
        let mut get = hub.standalone().unwrap();
        assert_eq!(get.events.try_recv().unwrap().message, "early");
        assert!(hub.standalone().is_none(), "one GET stream at a time");
        let id = EventId {
            stream: 3,
            number: 41,
        };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        assert_eq!(EventId::parse("garbage"), None);
    }
}
