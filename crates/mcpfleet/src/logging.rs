//! The control plane's log (its gateway's too: it runs in the same process). Text lines
//! for people by default; with `--log-format json` or the fleet file's
//! `logging: { format: json }`, one JSON object per line for log collectors: `time`
//! (RFC 3339, UTC), `level`, `target`, `fleet`, the fields of the spans the line was
//! written in (`server`, `revision`, `deployment`, ...) flattened, then the line's own
//! fields and its `message`. Which lines are written (`MCPFLEET_LOG`) does not depend on
//! the format.

use crate::traces::Traces;
use fleet_spec::model::LogFormat;
use serde_json::{Map, Value};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// Set once JSON lines are the log: what the command prints at its end goes there too.
static WRITES_JSON: AtomicBool = AtomicBool::new(false);

/// Whether the log is JSON lines, so a line printed beside it would break its format.
pub(crate) fn writes_json() -> bool {
    WRITES_JSON.load(Ordering::Relaxed)
}

/// Starts the log of a control plane running `fleet`: warnings in the foreground (progress
/// lines say the rest), everything to the log file when detached. With `traces`, its layer
/// too: `MCPFLEET_LOG` filters the log only, never what is traced.
pub(crate) fn init(detached: bool, format: LogFormat, fleet: &str, traces: Option<&Traces>) {
    // The MCP SDK and HTTP client log request URLs, which may carry a secret (a remote
    // server's token in a query): they stay silent; mcpfleet reports failures itself.
    let default = if detached {
        "info,rmcp=off,reqwest=off,hyper=off,hyper_util=off"
    } else {
        "warn,rmcp=off,reqwest=off,hyper=off,hyper_util=off"
    };
    let filter =
        EnvFilter::try_from_env("MCPFLEET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(traces.map(Traces::layer));
    // Only the first call installs a logger: the others find one and leave it.
    match format {
        LogFormat::Text => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(!detached)
                        .with_filter(filter),
                )
                .try_init();
        }
        LogFormat::Json => {
            let installed = registry
                .with(
                    JsonLines {
                        fleet: fleet.to_owned(),
                    }
                    .with_filter(filter),
                )
                .try_init();
            if installed.is_ok() {
                WRITES_JSON.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Writes each event as one JSON object on a line of standard error.
struct JsonLines {
    /// One control plane runs one fleet: every line carries its name.
    fleet: String,
}

/// The fields a span was created or later recorded with, kept for the lines written in it.
struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(kept) = span.extensions_mut().get_mut::<SpanFields>() {
            kept.0.extend(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        let mut time = String::new();
        // SystemTime writes RFC 3339 in UTC (`2026-12-05T14:33:59.123456Z`).
        let _ = SystemTime.format_time(&mut Writer::new(&mut time));
        line.insert("time".into(), time.into());
        let metadata = event.metadata();
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        line.insert("fleet".into(), self.fleet.clone().into());
        // Outermost first, so an inner span's field wins over an outer one's.
        for span in ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|s| s.from_root())
        {
            if let Some(fields) = span.extensions().get::<SpanFields>() {
                line.extend(fields.0.clone());
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.extend(fields.0);
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write per line: lines of concurrent tasks never interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Field values as JSON: numbers and booleans stay typed, the rest is text.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}
