//! The fleet file's `tracing:` block: where spans are exported over OTLP/HTTP (the
//! collector's URL, the headers of each export, the sample ratio, the service name),
//! checked into [`Tracing`].
//!
//! Deliberately not here: reading a header's secret, the environment's
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, or exporting anything (the control plane does, when it
//! starts).

use super::{UrlUse, Validator};
use crate::model::{Otlp, Tracing};
use crate::raw::RawTracing;
use crate::template::{Scope, Templates};
use std::collections::BTreeMap;

impl Validator {
    pub(super) fn tracing(&mut self, raw: Option<&RawTracing>, templates: &Templates) -> Tracing {
        // An `otlp:` that did not decode has its error already.
        let Some(otlp) = raw.and_then(|t| t.otlp.0.as_ref()) else {
            return Tracing::default();
        };
        let raw = &otlp.value;
        let endpoint = raw.endpoint.as_ref().map(|endpoint| {
            let text = self.render(templates, endpoint, Scope::FLEET);
            self.check_url(&text, endpoint.span, UrlUse::Collector);
            text
        });
        let mut headers = BTreeMap::new();
        for (name, value) in &raw.headers.0 {
            if !is_header_name(&name.value) {
                self.error(
                    format!("`{}` is not an HTTP header name", name.value),
                    name.span,
                )
                .help = Some(
                    "a header name is letters, digits and `-` (e.g. `authorization`, `x-scope-orgid`)"
                        .into(),
                );
            }
            let text = self.render(templates, value, Scope::FLEET);
            headers.insert(name.value.to_ascii_lowercase(), text);
        }
        let sample_ratio = match &raw.sample_ratio {
            None => 1.0,
            Some(ratio) if (0.0..=1.0).contains(&ratio.value) => ratio.value,
            Some(ratio) => {
                self.error(
                    format!("`sample_ratio` {} is not between 0 and 1", ratio.value),
                    ratio.span,
                )
                .help =
                    Some("write the share of traces to keep: 1 keeps all, 0.1 one in ten".into());
                1.0
            }
        };
        let service_name = match &raw.service_name {
            None => Otlp::DEFAULT_SERVICE_NAME.to_owned(),
            Some(name) if name.value.trim().is_empty() => {
                self.error("`service_name` is empty", name.span).help = Some(format!(
                    "leave it out for `{}`, or name the service your traces are filed under",
                    Otlp::DEFAULT_SERVICE_NAME
                ));
                Otlp::DEFAULT_SERVICE_NAME.to_owned()
            }
            Some(name) => name.value.clone(),
        };
        Tracing {
            otlp: Some(Otlp {
                endpoint,
                headers,
                sample_ratio,
                service_name,
            }),
        }
    }
}

/// An HTTP field name (RFC 9110 `token`).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
