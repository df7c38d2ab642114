//! An OTLP/HTTP collector for tests: `POST /v1/traces` on a port of its own, each export
//! request decoded with the protocol's own protobuf types and its spans kept, flattened,
//! for the test to look at. It answers every export with `200` and an empty response, as a
//! collector that took everything does.

use crate::wait_until_blocking;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as the collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// Attribute values as text (numbers and booleans as they print).
    pub attributes: BTreeMap<String, String>,
    /// The resource's `service.name`.
    pub service: String,
}

impl ReceivedSpan {
    /// The attribute's value, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The collector; it stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    /// `http://127.0.0.1:<port>`: what a fleet file's `tracing.otlp.endpoint` names.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<usize>>,
    _runtime: tokio::runtime::Runtime,
}

impl OtlpReceiver {
    /// Listens on a free loopback port, in a runtime of its own.
    ///
    /// # Panics
    /// No runtime or port can be had.
    pub fn start() -> Self {
        Self::start_at("127.0.0.1:0").expect("a free loopback port")
    }

    /// Listens on `address`; `None` when it is taken.
    ///
    /// # Panics
    /// No runtime can be had.
    pub fn start_at(address: &str) -> Option<Self> {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (kept, counted) = (spans.clone(), requests.clone());
        let export = move |body: axum::body::Bytes| {
            let (kept, counted) = (kept.clone(), counted.clone());
            async move {
                *counted.lock().expect("not poisoned") += 1;
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                };
                kept.lock().expect("not poisoned").extend(flatten(request));
                (
                    axum::http::StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        };
        let router = axum::Router::new().route("/v1/traces", axum::routing::post(export));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .ok()?;
        let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
        runtime.spawn(async move { axum::serve(listener, router).await });
        Some(OtlpReceiver {
            endpoint,
            spans,
            requests,
            _runtime: runtime,
        })
    }

    /// Every span received so far, in the order they arrived.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// How many export requests arrived (decodable or not).
    pub fn requests(&self) -> usize {
        *self.requests.lock().expect("not poisoned")
    }

    /// The spans received once `done` says they are all there, within `within`.
    ///
    /// # Panics
    /// `done` still says no at the deadline (the message lists what was received).
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        wait_until_blocking(what, within, || {
            let spans = self.spans();
            if done(&spans) { Ok(spans) } else { Err(spans) }
        })
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(text)
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            out.push(ReceivedSpan {
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
                service: service.clone(),
            });
        }
    }
    out
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?))))
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
