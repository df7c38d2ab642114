//! The fleet file's `notifications:` block: webhook receivers, their URL, signing secret,
//! events, body format and timeout, checked into [`Notifications`].
//!
//! Deliberately not here: reading the secret or sending anything (the control plane does,
//! with the secret's value rendered only when it sends).

use super::{UrlUse, Validator};
use crate::model::{Notifications, Webhook};
use crate::raw::{RawNotifications, RawWebhook, WebhookEvent};
use crate::template::{Scope, Templates};

impl Validator {
    pub(super) fn notifications(
        &mut self,
        raw: Option<&RawNotifications>,
        templates: &Templates,
    ) -> Notifications {
        let webhooks = raw
            .into_iter()
            .flat_map(|n| &n.webhooks)
            // A webhook that did not decode has its error already.
            .filter_map(|w| w.0.as_ref())
            .filter_map(|w| self.webhook(&w.value, w.span, templates))
            .collect();
        Notifications { webhooks }
    }

    /// `None` when the receiver has no usable URL (its error is reported).
    fn webhook(
        &mut self,
        raw: &RawWebhook,
        span: crate::diag::Span,
        templates: &Templates,
    ) -> Option<Webhook> {
        let Some(url) = &raw.url else {
            self.error("the webhook has no `url`", span).help =
                Some("add `url: https://hooks.example.com/mcpfleet`".into());
            return None;
        };
        let url_text = self.render(templates, url, Scope::FLEET);
        self.check_url(&url_text, url.span, UrlUse::Webhook);
        let secret = raw.secret.as_ref().map(|secret| {
            let text = self.render(templates, secret, Scope::FLEET);
            // A key written in the file would be kept, readable, in every revision the
            // store records of it; a reference is rendered only when a webhook is signed.
            if !text.shown.contains("***") {
                self.error("the webhook's secret is written in the file", secret.span)
                    .help = Some(
                    "declare it under `secrets:` and write `secret: \"{{ secret('name') }}\"`"
                        .into(),
                );
            }
            text
        });
        let events = match &raw.events {
            None => WebhookEvent::ALL.to_vec(),
            Some(listed) if listed.is_empty() => {
                self.error("`events` is empty: this webhook would never be sent", span)
                    .help =
                    Some("list the events it is for, or leave `events` out for all of them".into());
                Vec::new()
            }
            Some(listed) => WebhookEvent::ALL
                .into_iter()
                .filter(|event| listed.iter().any(|l| l.value == *event))
                .collect(),
        };
        Some(Webhook {
            url: url_text,
            secret,
            events,
            format: raw.format.as_ref().map(|f| f.value).unwrap_or_default(),
            timeout: self.duration(raw.timeout.as_ref(), Webhook::DEFAULT_TIMEOUT),
        })
    }
}
