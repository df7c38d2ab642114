//! Traces: the control plane's spans sent to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf), when the fleet file's `tracing.otlp` or the environment's
//! `OTEL_EXPORTER_OTLP_ENDPOINT` asks for it. Off otherwise: no layer is installed, so the
//! spans below cost what a disabled `tracing` span costs.
//!
//! The spans themselves are written where the work is done, as plain `tracing` spans:
//! `deployment` (fleet-control) → `wave` → `server step` → `health check` (fleet-engine),
//! and `gateway request` (fleet-gateway). This module owns turning them into OpenTelemetry
//! spans ([`TRACED_SPANS`], nothing else), sampling, the bounded queue and the background
//! export, and saying in the log what could not be exported.

use anyhow::{Context as _, Result, bail};
use fleet_spec::model::{Otlp, ValidFleet};
use fleet_spec::template::{Host, InstanceTemplates};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// The spans exported, by name: a deployment's tree and the gateway's requests. Other
/// spans (an instance's, which lives as long as the instance) stay in the log only.
pub(crate) const TRACED_SPANS: [&str; 5] = [
    "deployment",
    "wave",
    "server step",
    "health check",
    "gateway request",
];

/// Spans waiting for export, at most: past it, new spans are dropped (and counted) rather
/// than held, so a collector that cannot keep up costs memory no deployment or request
/// ever waits on.
const QUEUE: usize = 2048;

/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long stopping waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go, as configured.
struct Settings {
    /// `<endpoint>/v1/traces`, rendered; `None`: the exporter reads the environment
    /// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`).
    url: Option<String>,
    /// What the log calls the collector (a secret in the URL as `***`).
    shown: String,
    headers: HashMap<String, String>,
    sample_ratio: f64,
    service_name: String,
}

/// The running exporter; [`Traces::shutdown`] sends what is left.
pub(crate) struct Traces {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

impl Traces {
    /// Starts exporting if `fleet` (or the environment, for a file that does not say)
    /// asks for traces; `None` when nothing does. Call from within the Tokio runtime: the
    /// exports are sent on it.
    ///
    /// # Errors
    /// A header or the endpoint names a secret or variable that cannot be read, or the
    /// rendered endpoint is not an http(s) URL.
    pub(crate) fn start(fleet: &ValidFleet, host: Arc<dyn Host>) -> Result<Option<Self>> {
        let settings = match &fleet.tracing.otlp {
            Some(otlp) => render(fleet, otlp, host)?,
            None => match from_environment() {
                Some(settings) => settings,
                None => return Ok(None),
            },
        };
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(fleet_tls::client_config())
            .user_agent(concat!("mcpfleet/", env!("CARGO_PKG_VERSION")))
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("cannot build the HTTP client for traces")?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime {
                client,
                runtime: tokio::runtime::Handle::current(),
            })
            .with_headers(settings.headers)
            .with_timeout(EXPORT_TIMEOUT);
        if let Some(url) = settings.url {
            exporter = exporter.with_endpoint(url);
        }
        let exporter = exporter
            .build()
            .with_context(|| format!("cannot export traces to {}", settings.shown))?;
        let waiting = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        // The schedule (OTEL_BSP_SCHEDULE_DELAY) and batch size come from the environment
        // as usual; the queue is ours, counted.
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .build();
        let processor = BatchSpanProcessor::builder(Reported {
            inner: exporter,
            collector: settings.shown,
            waiting: waiting.clone(),
            dropped: dropped.clone(),
            failing: AtomicBool::new(false),
            lost: AtomicUsize::new(0),
        })
        .with_batch_config(batches)
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: processor,
                waiting,
                dropped,
            })
            // A client's sampled `traceparent` is followed; new traces keep the ratio.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name)
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build();
        Ok(Some(Traces { provider }))
    }

    /// Reads the file's exporter settings (its secrets too) without exporting anything.
    ///
    /// # Errors
    /// As [`Traces::start`].
    pub(crate) fn check(fleet: &ValidFleet, host: Arc<dyn Host>) -> Result<()> {
        match &fleet.tracing.otlp {
            Some(otlp) => render(fleet, otlp, host).map(drop),
            None => Ok(()),
        }
    }

    /// The layer that turns [`TRACED_SPANS`] (and the events logged in them, from `info`
    /// up) into OpenTelemetry spans.
    pub(crate) fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("mcpfleet"))
            // Only the spans (and span events) of these traces: the exporter's own HTTP
            // client must not be traced into the queue it empties.
            .with_filter(filter_fn(|metadata| {
                if metadata.is_span() {
                    TRACED_SPANS.contains(&metadata.name())
                } else {
                    metadata.target().starts_with("fleet_")
                        && *metadata.level() <= tracing::Level::INFO
                }
            }))
    }

    /// Sends what is queued (waiting at most a few seconds for the collector) and stops.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        // The batch thread sends its last export on the runtime: wait for it elsewhere.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
            .await;
    }
}

/// The file's exporter, its secrets read now.
fn render(fleet: &ValidFleet, otlp: &Otlp, host: Arc<dyn Host>) -> Result<Settings> {
    let templates = InstanceTemplates::new(fleet, host, None, 0)
        .map_err(|e| anyhow::anyhow!("tracing.otlp: {}", e.message))?;
    let url = match &otlp.endpoint {
        None => None,
        Some(endpoint) => {
            let rendered = templates
                .render_fleet(endpoint)
                .map_err(|e| anyhow::anyhow!("tracing.otlp.endpoint: {}", e.message))?;
            // Validation checked a URL it could see; one holding a secret is checked here,
            // and the message never repeats it.
            let base = reqwest::Url::parse(&rendered)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if base.is_none() {
                bail!(
                    "tracing.otlp.endpoint `{}` is not an http(s) URL once its secrets are read",
                    endpoint.shown
                );
            }
            Some(traces_url(&rendered))
        }
    };
    let headers = otlp
        .headers
        .iter()
        .map(|(name, value)| {
            let value = templates
                .render_fleet(value)
                .map_err(|e| anyhow::anyhow!("tracing.otlp.headers.{name}: {}", e.message))?;
            Ok((name.clone(), value))
        })
        .collect::<Result<_>>()?;
    Ok(Settings {
        url,
        shown: otlp.endpoint.as_ref().map_or_else(
            || environment_endpoint().unwrap_or_else(|| "the default OTLP endpoint".into()),
            |e| traces_url(&e.shown),
        ),
        headers,
        sample_ratio: otlp.sample_ratio,
        service_name: otlp.service_name.clone(),
    })
}

/// Traces asked for by the environment alone, the way every OpenTelemetry SDK reads it.
fn from_environment() -> Option<Settings> {
    Some(Settings {
        url: None,
        shown: environment_endpoint()?,
        headers: HashMap::new(),
        sample_ratio: 1.0,
        service_name: Otlp::DEFAULT_SERVICE_NAME.to_owned(),
    })
}

/// What the exporter will read from the environment, for the log.
fn environment_endpoint() -> Option<String> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| traces_url(&base)))
}

/// Where an OTLP/HTTP collector at `base` takes spans.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// The exporter's HTTP client: the workspace's reqwest, its requests sent on the Tokio
/// runtime, because the batch processor exports from a thread of its own.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let response = self
            .runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let mut answer = http::Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    *headers = response.headers().clone();
                }
                let body = response.bytes().await?;
                Ok::<_, opentelemetry_http::HttpError>(answer.body(body)?)
            })
            .await??;
        Ok(response)
    }
}

/// The batch processor behind a counted bound: a span that would exceed [`QUEUE`] spans
/// not yet exported is dropped here, and counted, before the processor's own queue (of the
/// same size) could drop it silently.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed on and not yet exported (or given up on).
    waiting: Arc<AtomicUsize>,
    /// Spans dropped since the log last said so.
    dropped: Arc<AtomicUsize>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < QUEUE).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else if self.dropped.fetch_add(1, Ordering::AcqRel) == 0 {
            tracing::warn!(
                "traces: {QUEUE} spans are waiting for the collector; new spans are dropped until it catches up"
            );
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.inner.shutdown_with_timeout(timeout);
        let dropped = self.dropped.swap(0, Ordering::AcqRel);
        if dropped > 0 {
            tracing::warn!("traces: {dropped} spans were dropped, the export queue being full");
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, its failures said in the log once per outage (with the spans lost)
/// rather than once per batch.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    collector: String,
    waiting: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    /// The last export failed.
    failing: AtomicBool,
    /// Spans whose export failed since the last success.
    lost: AtomicUsize,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        let result = self.inner.export(batch).await;
        self.waiting.fetch_sub(count, Ordering::AcqRel);
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    let lost = self.lost.swap(0, Ordering::AcqRel);
                    tracing::warn!(
                        "traces: exporting to {} again; {lost} spans were lost while it failed",
                        self.collector
                    );
                }
                let dropped = self.dropped.swap(0, Ordering::AcqRel);
                if dropped > 0 {
                    tracing::warn!(
                        "traces: {dropped} spans were dropped while the export queue was full"
                    );
                }
            }
            Err(error) => {
                self.lost.fetch_add(count, Ordering::AcqRel);
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "traces: cannot export spans to {}: {error}; they are dropped until it answers (deployments and requests do not wait for it)",
                        self.collector
                    );
                }
            }
        }
        // Said above: the processor would only say it again, batch after batch.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let lost = self.lost.swap(0, Ordering::AcqRel);
        if lost > 0 {
            tracing::warn!(
                "traces: {lost} spans could not be exported to {}",
                self.collector
            );
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
