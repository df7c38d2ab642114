//! The `gateway request` span of a request the gateway relays, and the W3C Trace Context
//! (<https://www.w3.org/TR/trace-context/>) an HTTP upstream gets from it.
//!
//! The span is a plain `tracing` span at `TRACE` level, which no log filter of mcpfleet
//! takes by default: only the OTLP exporter's layer, installed when traces are configured,
//! asks for it (by name, at any level). Without that layer the span's callsite is off and
//! [`RequestSpan::start`] costs one load of `tracing`'s global level, allocates nothing and
//! returns `None`: the request then goes on exactly as it came (the client's
//! `traceparent` and `tracestate` pass through untouched, as every other header does).
//!
//! With it, the span continues the client's trace (its `traceparent` is the span's remote
//! parent) or starts one, the upstream is told the span's own context, and the latency
//! histogram's exemplar is the span's trace id.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId as OtelTraceId, TraceState,
};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{MethodLabel, Outcome};
use crate::trace_context::{TraceId, TraceParent};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A relayed request's span, open until [`RequestSpan::end`] (or until dropped, when the
/// request ends without an outcome).
#[derive(Debug)]
pub(crate) struct RequestSpan {
    span: tracing::Span,
    /// The span's OpenTelemetry context: its trace, id, sampling and trace state.
    context: SpanContext,
}

impl RequestSpan {
    /// The span of a request to `server`'s `revision`, as a child of the client's
    /// `traceparent` when it is valid, else as a trace's root. `None` when traces are not
    /// exported (see the module docs): nothing was created.
    pub(crate) fn start(
        headers: &HeaderMap,
        server: &str,
        revision: u64,
        method: MethodLabel,
        tool: Option<&str>,
    ) -> Option<Self> {
        // `parent: None`: whatever span the handler runs in, a request's trace is the
        // client's, not the gateway's.
        let span = tracing::trace_span!(
            parent: None,
            "gateway request",
            otel.kind = "server",
            server,
            revision,
            method = method.as_str(),
            tool,
            outcome = Empty,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        );
        if span.is_disabled() {
            return None;
        }
        if let Some(parent) = remote_parent(headers) {
            // Fails only without the exporter's layer, which `context` below then says.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        }
        let context = span.context().span().span_context().clone();
        // A log asked for TRACE spans (`MCPFLEET_LOG=trace`) but nothing exports them: no
        // OpenTelemetry span stands behind this one, so the request goes on untraced.
        context.is_valid().then_some(Self { span, context })
    }

    /// The span's trace: the client's, or the one the span started.
    pub(crate) fn trace_id(&self) -> Option<TraceId> {
        TraceId::from_bytes(self.context.trace_id().to_bytes())
    }

    /// The trace a request belongs to, for its latency's exemplar: its span's when it has
    /// one, else the client's `traceparent`'s.
    pub(crate) fn trace_of(span: Option<&Self>, headers: &HeaderMap) -> Option<TraceId> {
        match span {
            Some(span) => span.trace_id(),
            None => TraceId::of_request(headers),
        }
    }

    /// Tells the upstream the span's context, replacing the client's: `traceparent` with
    /// the span's id as parent-id, `tracestate` as the client sent it (when valid).
    pub(crate) fn propagate(&self, headers: &mut HeaderMap) {
        write_trace_context(&self.context, headers);
    }

    /// The HTTP status the client's answer has (the upstream's, or the gateway's error).
    pub(crate) fn status(&self, status: StatusCode) {
        self.span
            .record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            self.span.record("otel.status_code", "ERROR");
        }
    }

    /// Closes the span with how the request ended (the metrics' outcome).
    pub(crate) fn end(self, outcome: Outcome) {
        self.span.record("outcome", outcome.as_str());
        if outcome == Outcome::TransportError {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

/// The client's span, from its `traceparent`, with its `tracestate`.
fn remote_parent(headers: &HeaderMap) -> Option<SpanContext> {
    let parent = TraceParent::of_request(headers)?;
    Some(SpanContext::new(
        OtelTraceId::from_bytes(parent.trace_id.to_bytes()),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        trace_state(headers),
    ))
}

/// The client's `tracestate` (several header lines are one list, in order); empty when
/// there is none or it is malformed, which the spec says to discard rather than pass on.
fn trace_state(headers: &HeaderMap) -> TraceState {
    let lines: Vec<&str> = headers
        .get_all(TRACESTATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    lines.join(",").parse().unwrap_or_default()
}

/// `context` as the `traceparent` (version 00) and `tracestate` headers of `headers`; a
/// `tracestate` the context has no entries for is removed.
fn write_trace_context(context: &SpanContext, headers: &mut HeaderMap) {
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    match HeaderValue::try_from(traceparent) {
        Ok(value) => headers.insert(TRACEPARENT, value),
        // Hex digits and dashes are always a header value; never pass the client's on
        // as if it were this span's.
        Err(_) => headers.remove(TRACEPARENT),
    };
    match HeaderValue::try_from(context.trace_state().header()) {
        Ok(value) if !value.is_empty() => headers.insert(TRACESTATE, value),
        _ => headers.remove(TRACESTATE),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn texts(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_clients_traceparent_and_tracestate_are_the_remote_parent() {
        let parent = remote_parent(&headers(&[
            ("traceparent", CLIENT),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]))
        .unwrap();
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_sampled());
        assert!(parent.is_remote());
        assert_eq!(
            parent.trace_state().header(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );

        let unsampled = CLIENT.replace("-01", "-00");
        let parent = remote_parent(&headers(&[("traceparent", &unsampled)])).unwrap();
        assert!(!parent.is_sampled());
        assert_eq!(parent.trace_state().header(), "");
    }

    #[test]
    fn no_valid_traceparent_no_parent_and_a_malformed_tracestate_is_dropped() {
        assert_eq!(remote_parent(&HeaderMap::new()), None);
        assert_eq!(
            remote_parent(&headers(&[("traceparent", &CLIENT.to_uppercase())])),
            None
        );
        let parent = remote_parent(&headers(&[
            ("traceparent", CLIENT),
            ("tracestate", "no equals sign"),
        ]))
        .unwrap();
        assert_eq!(parent.trace_state().header(), "");
    }

    #[test]
    fn the_upstream_gets_the_spans_context_in_place_of_the_clients() {
        let span = SpanContext::new(
            OtelTraceId::from_bytes([0x4b; 16]),
            SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 7]),
            TraceFlags::SAMPLED,
            false,
            "rojo=00f067aa0ba902b7".parse().unwrap(),
        );
        let mut upstream = headers(&[
            ("traceparent", CLIENT),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
            ("accept", "text/event-stream"),
        ]);
        write_trace_context(&span, &mut upstream);
        assert_eq!(
            texts(&upstream, "traceparent"),
            ["00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-0000000000000007-01"]
        );
        assert_eq!(texts(&upstream, "tracestate"), ["rojo=00f067aa0ba902b7"]);
        assert_eq!(texts(&upstream, "accept"), ["text/event-stream"]);

        // Not sampled, no state: the flags say so and no `tracestate` is left over.
        let span = SpanContext::new(
            OtelTraceId::from_bytes([0x4b; 16]),
            SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 7]),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        write_trace_context(&span, &mut upstream);
        assert_eq!(
            texts(&upstream, "traceparent"),
            ["00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-0000000000000007-00"]
        );
        assert!(texts(&upstream, "tracestate").is_empty());
    }

    #[test]
    fn without_an_exporter_no_span_is_started() {
        // No subscriber in this test: as in a gateway whose traces are not configured.
        let client = headers(&[("traceparent", CLIENT)]);
        let span = RequestSpan::start(
            &client,
            "echo",
            1,
            MethodLabel::of(Some("tools/call")),
            Some("echo"),
        );
        assert!(span.is_none());
    }

    /// What a request pays for its span when traces are off (issue 13: the gateway's CPU
    /// per request): `cargo test -p fleet-gateway --release --lib request_span_cost --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "a micro benchmark: run it by name in a release build"]
    fn request_span_cost_without_an_exporter() {
        let client = headers(&[("traceparent", CLIENT)]);
        let method = MethodLabel::of(Some("tools/call"));
        let n: u32 = 10_000_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let span = RequestSpan::start(&client, "echo", 1, method, Some("echo"));
            std::hint::black_box(span);
        }
        #[allow(clippy::cast_precision_loss)]
        let each = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("RequestSpan::start without an exporter: {each:.2} ns per request");
    }
}
