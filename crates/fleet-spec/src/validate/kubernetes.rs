//! The fleet file's Kubernetes keys: the top-level `kubernetes:` block, `runtime:`, each
//! secret's `kubernetes:` and each server's `autoscale:` and `kubernetes:`, checked against
//! Kubernetes' own rules so that whatever renders them can trust the model.
//!
//! Deliberately not here: whether a fleet's servers can run on Kubernetes at all (a local
//! program cannot); the renderer says that, with the objects in front of it.

use super::Validator;
use crate::de::{Recover, Spanned};
use crate::diag::Span;
use crate::model::{
    Autoscale, Backup, Egress, GatewayReplicas, Ingress, Kubernetes, KubernetesSecret, Quota,
    ServerKubernetes, Toleration,
};
use crate::raw::{
    CpuText, Named, RawAutoscale, RawBackup, RawFleet, RawKubernetes, RawQuota, RawSecret,
    RawServerKubernetes, RawToleration, RuntimeKind, TolerationOperator,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What [`is_dns_label`] accepts, as help for a refused name.
pub const DNS_LABEL_RULE: &str = "a DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit";

/// What [`is_dns_subdomain`] accepts, as help for a refused name.
pub const DNS_SUBDOMAIN_RULE: &str = "a DNS-1123 subdomain: at most 253 lowercase letters, digits, `-` and `.`, each `.`-separated part starting and ending with a letter or digit";

const SECRET_KEY_RULE: &str = "a Secret's key is letters, digits, `-`, `_` and `.` (at most 253)";

const LABEL_RULE: &str =
    "at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit";

/// Whether `name` is a DNS-1123 label (a namespace, a Service).
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && is_dns_part(name)
}

/// Whether `name` is a DNS-1123 subdomain (most object names: a Secret, a PriorityClass).
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_part)
}

fn is_dns_part(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    part.starts_with(alnum) && part.ends_with(alnum) && part.chars().all(|c| alnum(c) || c == '-')
}

/// A label's name or non-empty value: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, ≤ 63.
fn is_label_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A label key (also a taint key): `NAME` or `PREFIX/NAME`, the prefix a DNS subdomain.
fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}

fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses an amount of CPU into millicores: CPUs (`8`, `0.5`, at most three decimals) or
/// millicores (`500m`).
fn parse_cpu(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let millis = if let Some(m) = t.strip_suffix('m') {
        m.parse::<u64>()
            .map_err(|_| format!("`{text}` is not a whole number of millicores"))?
    } else {
        let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(format!("`{text}` is not an amount of CPU"));
        }
        if fraction.len() > 3 {
            return Err(format!(
                "`{text}` is finer than a millicore (at most three decimals)"
            ));
        }
        let whole: u64 = whole
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        let fraction: u64 = format!("{fraction:0<3}").parse().unwrap_or(0);
        whole
            .checked_mul(1000)
            .and_then(|m| m.checked_add(fraction))
            .ok_or_else(|| format!("`{text}` is too large"))?
    };
    if millis == 0 {
        return Err("the amount must be above zero".into());
    }
    Ok(millis)
}

/// Parses `CIDR` or `CIDR:PORT` (`10.0.0.0/8`, `10.0.0.0/8:5432`, `fd00::/8:443`).
fn parse_egress(text: &str) -> Result<Egress, String> {
    let Some((address, rest)) = text.split_once('/') else {
        return Err(format!(
            "`{text}` has no prefix length; write a network such as `10.0.0.0/8`, or `10.1.2.3/32` for one address"
        ));
    };
    let (prefix, port) = match rest.split_once(':') {
        Some((prefix, port)) => (prefix, Some(port)),
        None => (rest, None),
    };
    let network: IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    let max = if network.is_ipv4() { 32 } else { 128 };
    let prefix: u8 =
        prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
            format!("the prefix length `{prefix}` is not a number from 0 to {max}")
        })?;
    // The bits past the prefix; a shift by the whole width (a /32 or /128) leaves none.
    let host_bits = match network {
        IpAddr::V4(a) => {
            u128::from(u32::from(a) & u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0))
        }
        IpAddr::V6(a) => u128::from(a) & u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0),
    };
    if host_bits != 0 {
        return Err(format!(
            "`{address}/{prefix}` has bits set past its prefix; write the network's first address"
        ));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("the port `{p}` is not a number from 1 to 65535"))
        })
        .transpose()?;
    Ok(Egress {
        network,
        prefix,
        port,
    })
}

/// Whether `schedule` has the 5 fields of a cron schedule (minute, hour, day of month,
/// month, day of week), each of digits, names and `* / , - ?`.
fn is_cron_schedule(schedule: &str) -> bool {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    fields.len() == 5
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?'))
        })
}

impl Validator {
    /// The fleet's Kubernetes settings. `runtime` is the one after the environment's
    /// overlay; `fleet` is the fleet's name (empty when missing, already an error).
    pub(super) fn kubernetes(&mut self, raw: &RawFleet, fleet: &str) -> Kubernetes {
        let block = raw.kubernetes.get();
        // Names derived from the fleet's name matter only to a fleet meant for Kubernetes.
        let for_kubernetes = block.is_some()
            || raw
                .runtime
                .get()
                .is_some_and(|r| r.value == RuntimeKind::Kubernetes);
        let empty = RawKubernetes::default();
        let k = block.unwrap_or(&empty);
        let name_span = raw.name.as_ref().map_or(Span::point(1, 1), |n| n.span);

        let namespace = match &k.namespace {
            Some(ns) => {
                self.dns_name(ns, "namespace", true);
                ns.value.clone()
            }
            None => {
                if for_kubernetes && !fleet.is_empty() && !is_dns_label(fleet) {
                    self.error(
                        format!("the Kubernetes namespace defaults to the fleet's name `{fleet}`, which is not a DNS-1123 label"),
                        name_span,
                    )
                    .help = Some(format!("set `kubernetes: {{ namespace: … }}`; a namespace is {DNS_LABEL_RULE}"));
                }
                fleet.to_string()
            }
        };
        let context = k.context.as_ref().map(|c| {
            if c.value.trim().is_empty() {
                self.error("`context` is empty", c.span).help = Some(
                    "name a context of your kubeconfig, or leave `context` out to use the current one"
                        .into(),
                );
            }
            c.value.clone()
        });
        let image = match &k.image {
            Some(image) => {
                if image.value.is_empty() || image.value.contains(char::is_whitespace) {
                    self.error(format!("invalid image `{}`", image.value), image.span)
                        .help =
                        Some("write an image reference: `registry.example/mcpfleet:0.1.0`".into());
                }
                image.value.clone()
            }
            None => format!("mcpfleet:{}", env!("CARGO_PKG_VERSION")),
        };
        let ingress = k.ingress.get().map(|i| {
            let host = i.host.value.strip_prefix("*.").unwrap_or(&i.host.value);
            if !is_dns_subdomain(host) {
                self.error(
                    format!("invalid Ingress host `{}`", i.host.value),
                    i.host.span,
                )
                .help = Some(format!(
                    "a host is {DNS_SUBDOMAIN_RULE}, optionally after `*.`"
                ));
            }
            if let Some(class) = &i.class {
                self.dns_name(class, "IngressClass", false);
            }
            if let Some(secret) = &i.tls_secret {
                self.dns_name(secret, "TLS Secret", false);
            }
            Ingress {
                host: i.host.value.clone(),
                class: i.class.as_ref().map(|c| c.value.clone()),
                tls_secret: i.tls_secret.as_ref().map(|s| s.value.clone()),
            }
        });
        let backup = self.backup(k.backup.get());
        let quota = k.quota.get().and_then(|q| self.quota(q));
        let secrets = self.kubernetes_secrets(&raw.secrets, fleet, for_kubernetes);
        let gateway_replicas = k
            .gateway_replicas
            .get()
            .and_then(|r| self.gateway_replicas(r));
        Kubernetes {
            namespace,
            context,
            reach: k.reach.as_ref().map(|r| r.value),
            progress_deadline: (k.progress_deadline.as_ref())
                .map(|d| self.duration(Some(d), Kubernetes::DEFAULT_PROGRESS_DEADLINE)),
            image,
            ingress,
            service_monitor: k.service_monitor.as_ref().is_some_and(|s| s.value),
            backup,
            quota,
            secrets,
            gateway_replicas,
        }
    }

    /// Checks an object name the file sets: a DNS-1123 label or subdomain.
    fn dns_name(&mut self, name: &Spanned<String>, what: &str, label: bool) {
        let (valid, rule) = if label {
            (is_dns_label(&name.value), DNS_LABEL_RULE)
        } else {
            (is_dns_subdomain(&name.value), DNS_SUBDOMAIN_RULE)
        };
        if !valid {
            self.error(format!("invalid {what} name `{}`", name.value), name.span)
                .help = Some(format!("use {rule}"));
        }
    }

    fn backup(&mut self, raw: Option<&RawBackup>) -> Backup {
        let schedule = raw.and_then(|b| b.schedule.as_ref());
        if let Some(s) = schedule.filter(|s| !is_cron_schedule(&s.value)) {
            self.error(format!("invalid cron schedule `{}`", s.value), s.span)
                .help = Some(
                "write 5 fields: minute, hour, day of month, month, day of week (`0 3 * * *` is 03:00 daily)"
                    .into(),
            );
        }
        let keep = self.count(
            raw.and_then(|b| b.keep.as_ref()),
            Backup::DEFAULT_KEEP,
            1,
            "keep",
        );
        let size = raw
            .and_then(|b| b.size.as_ref())
            .and_then(|s| self.memory(s))
            .unwrap_or(Backup::DEFAULT_SIZE);
        Backup {
            schedule: schedule.map_or_else(|| Backup::DEFAULT_SCHEDULE.into(), |s| s.value.clone()),
            keep,
            size,
        }
    }

    fn quota(&mut self, raw: &Spanned<RawQuota>) -> Option<Quota> {
        let q = &raw.value;
        if q.cpu.is_none() && q.memory.is_none() && q.pods.is_none() {
            self.error("`quota` sets no limit", raw.span).help =
                Some("set `cpu`, `memory` or `pods`, or remove `quota`".into());
            return None;
        }
        let cpu_millis = q.cpu.as_ref().and_then(|c| self.cpu(c));
        let memory = q.memory.as_ref().and_then(|m| self.memory(m));
        let pods = q.pods.as_ref().map(|p| self.count(Some(p), 1, 1, "pods"));
        Some(Quota {
            cpu_millis,
            memory,
            pods,
        })
    }

    fn cpu(&mut self, raw: &Spanned<CpuText>) -> Option<u64> {
        match parse_cpu(&raw.value.0) {
            Ok(millis) => Some(millis),
            Err(message) => {
                self.error(format!("invalid amount of CPU: {message}"), raw.span)
                    .help = Some("write CPUs (`8`, `0.5`) or millicores (`500m`)".into());
                None
            }
        }
    }

    /// Where each declared secret is on Kubernetes, defaults filled.
    fn kubernetes_secrets(
        &mut self,
        raw: &Recover<Named<Recover<RawSecret>>>,
        fleet: &str,
        for_kubernetes: bool,
    ) -> BTreeMap<String, KubernetesSecret> {
        let default_secret = Kubernetes::default_secret(fleet);
        let mut default_reported = false;
        let mut out = BTreeMap::new();
        for (name, secret) in raw.0.iter().flat_map(|s| &s.0) {
            let Recover(Some(secret)) = secret else {
                continue;
            };
            let k = secret.kubernetes.as_ref().map(|k| &k.value);
            let secret_name = match k.and_then(|k| k.secret.as_ref()) {
                Some(s) => {
                    self.dns_name(s, "Secret", false);
                    s.value.clone()
                }
                None => {
                    if for_kubernetes
                        && !fleet.is_empty()
                        && !default_reported
                        && !is_dns_subdomain(&default_secret)
                    {
                        default_reported = true;
                        self.error(
                            format!("secret `{}` is read from the Secret `{default_secret}`, which is not a valid Kubernetes name", name.value),
                            name.span,
                        )
                        .help = Some(format!("name the Secret: `kubernetes: {{ secret: … }}`; a Secret name is {DNS_SUBDOMAIN_RULE}"));
                    }
                    default_secret.clone()
                }
            };
            let key = match k.and_then(|k| k.key.as_ref()) {
                Some(key) => {
                    if !is_secret_key(&key.value) {
                        self.error(format!("invalid Secret key `{}`", key.value), key.span)
                            .help = Some(SECRET_KEY_RULE.into());
                    }
                    key.value.clone()
                }
                None => {
                    if for_kubernetes && !is_secret_key(&name.value) {
                        self.error(
                            format!(
                                "secret `{}` is its own Secret key by default, which is not a valid key",
                                name.value
                            ),
                            name.span,
                        )
                        .help = Some(format!(
                            "name the key: `kubernetes: {{ key: … }}`; {SECRET_KEY_RULE}"
                        ));
                    }
                    name.value.clone()
                }
            };
            out.insert(
                name.value.clone(),
                KubernetesSecret {
                    secret: secret_name,
                    key,
                },
            );
        }
        out
    }

    /// A server's autoscaling; `None` after an error.
    pub(super) fn autoscale(&mut self, raw: &Spanned<RawAutoscale>) -> Option<Autoscale> {
        let a = &raw.value;
        let errors = self.diags.len();
        self.scale_bounds(a);
        if let Some(s) = a.sessions_per_pod.as_ref().filter(|s| s.value == 0) {
            self.error("`sessions_per_pod` must be at least 1", s.span);
        }
        if a.cpu.is_none() && a.memory.is_none() && a.sessions_per_pod.is_none() {
            self.error("`autoscale` has no target", raw.span).help =
                Some("set `cpu`, `memory` (percent) or `sessions_per_pod`".into());
        }
        (self.diags.len() == errors).then(|| scale(a))
    }

    /// `kubernetes.gateway_replicas`; `None` after an error. A gateway pod's sessions are
    /// any replica's (sealed ids), so live sessions per pod say nothing of its load: only
    /// CPU and memory scale it, and none is needed for a fixed count (`min` = `max`).
    fn gateway_replicas(&mut self, raw: &Spanned<RawAutoscale>) -> Option<GatewayReplicas> {
        let a = &raw.value;
        let errors = self.diags.len();
        self.scale_bounds(a);
        if let Some(s) = &a.sessions_per_pod {
            self.error("`sessions_per_pod` does not apply to gateway replicas", s.span)
                .help = Some(
                "any replica serves any session, so sessions per pod do not measure a pod's load: scale on `cpu` or `memory` (percent of the pod's request)"
                    .into(),
            );
        }
        if a.cpu.is_none() && a.memory.is_none() && a.max.value > a.min.value {
            self.error("`gateway_replicas` has no target to scale on", raw.span)
                .help = Some(
                "set `cpu` or `memory` (percent of the pod's request), or `max` equal to `min` for a fixed count"
                    .into(),
            );
        }
        (self.diags.len() == errors).then(|| GatewayReplicas {
            scale: scale(a),
            span: raw.span,
        })
    }

    /// The checks every `min`/`max`/`cpu`/`memory` has.
    fn scale_bounds(&mut self, a: &RawAutoscale) {
        if a.min.value < 1 {
            self.error("`min` must be at least 1", a.min.span).help =
                Some("a HorizontalPodAutoscaler never scales to zero".into());
        }
        if a.max.value < a.min.value {
            self.error(
                format!("`max` ({}) is below `min` ({})", a.max.value, a.min.value),
                a.max.span,
            );
        }
        for (what, percent) in [("cpu", &a.cpu), ("memory", &a.memory)] {
            if let Some(p) = percent.as_ref().filter(|p| !(1..=1000).contains(&p.value)) {
                self.error(
                    format!("`{what}` must be a percentage from 1 to 1000"),
                    p.span,
                )
                .help = Some(format!(
                    "the target average {what} use, as a percentage of the pods' request"
                ));
            }
        }
    }

    /// A server's placement and egress.
    pub(super) fn server_kubernetes(
        &mut self,
        raw: Option<&RawServerKubernetes>,
    ) -> ServerKubernetes {
        let Some(raw) = raw else {
            return ServerKubernetes::default();
        };
        let mut node_selector = BTreeMap::new();
        for (key, value) in raw.node_selector.iter().flat_map(|n| &n.0) {
            if !is_label_key(&key.value) {
                self.error(format!("invalid node label `{}`", key.value), key.span)
                    .help = Some(format!(
                    "a label is `NAME` or `PREFIX/NAME`: NAME is {LABEL_RULE}, PREFIX {DNS_SUBDOMAIN_RULE}"
                ));
            }
            if !is_label_value(&value.value) {
                self.error(
                    format!("invalid node label value `{}`", value.value),
                    value.span,
                )
                .help = Some(format!("a label value is empty or {LABEL_RULE}"));
            }
            node_selector.insert(key.value.clone(), value.value.clone());
        }
        let tolerations = raw
            .tolerations
            .iter()
            .flatten()
            .filter_map(Recover::get)
            .map(|t| self.toleration(t))
            .collect();
        if let Some(class) = &raw.priority_class {
            self.dns_name(class, "PriorityClass", false);
        }
        let egress = raw
            .egress
            .iter()
            .flatten()
            .filter_map(|e| match parse_egress(&e.value) {
                Ok(egress) => Some(egress),
                Err(message) => {
                    self.error(format!("invalid egress: {message}"), e.span)
                        .help = Some(
                        "write `CIDR` or `CIDR:PORT`: `10.0.0.0/8:5432`, `0.0.0.0/0:443`".into(),
                    );
                    None
                }
            })
            .collect();
        ServerKubernetes {
            node_selector,
            tolerations,
            priority_class: raw.priority_class.as_ref().map(|p| p.value.clone()),
            spread: raw.spread.get().copied().unwrap_or_default(),
            egress,
        }
    }

    fn toleration(&mut self, raw: &Spanned<RawToleration>) -> Toleration {
        let t = &raw.value;
        if let Some(key) = t.key.as_ref().filter(|k| !is_label_key(&k.value)) {
            self.error(format!("invalid taint key `{}`", key.value), key.span)
                .help = Some(format!(
                "a taint key is `NAME` or `PREFIX/NAME`: NAME is {LABEL_RULE}"
            ));
        }
        match t.operator.value {
            TolerationOperator::Exists => {
                if let Some(value) = &t.value {
                    self.error("an `Exists` toleration has no `value`", value.span)
                        .help = Some(
                        "it matches the key with any value; remove `value`, or use `operator: Equal`"
                            .into(),
                    );
                }
            }
            TolerationOperator::Equal => {
                if t.key.is_none() {
                    self.error("an `Equal` toleration needs a `key`", raw.span)
                        .help = Some(
                        "add `key:`, or use `operator: Exists` to tolerate every taint".into(),
                    );
                }
                if let Some(value) = t.value.as_ref().filter(|v| !is_label_value(&v.value)) {
                    self.error(format!("invalid taint value `{}`", value.value), value.span)
                        .help = Some(format!("a taint value is empty or {LABEL_RULE}"));
                }
            }
        }
        Toleration {
            key: t.key.as_ref().map(|k| k.value.clone()),
            operator: t.operator.value,
            value: t.value.as_ref().map(|v| v.value.clone()),
            effect: t.effect.as_ref().map(|e| e.value),
        }
    }
}

/// The bounds and targets as written (checked already).
fn scale(a: &RawAutoscale) -> Autoscale {
    Autoscale {
        min: a.min.value,
        max: a.max.value,
        cpu: a.cpu.as_ref().map(|c| c.value),
        memory: a.memory.as_ref().map(|m| m.value),
        sessions_per_pod: a.sessions_per_pod.as_ref().map(|s| s.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_follow_kubernetes_rules() {
        for good in ["tools", "a", "mcp-prod", "0abc"] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "Tools", "my_tools", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("mcp.example.com"));
        assert!(!is_dns_subdomain("mcp..example"));
        assert!(!is_dns_subdomain("mcp.example."));
    }

    #[test]
    fn cpu_amounts_read_cpus_and_millicores() {
        for (text, millis) in [("8", 8000), ("0.5", 500), ("500m", 500), ("1.25", 1250)] {
            assert_eq!(parse_cpu(text), Ok(millis), "{text}");
        }
        for (text, error) in [
            ("0", "above zero"),
            ("0.0005", "finer than a millicore"),
            ("1.5m", "millicores"),
            ("two", "not an amount"),
            (".5", "not an amount"),
        ] {
            let e = parse_cpu(text).unwrap_err();
            assert!(e.contains(error), "{text}: {e}");
        }
    }

    #[test]
    fn egress_reads_networks_with_an_optional_port() {
        let e = parse_egress("10.0.0.0/8:5432").unwrap();
        assert_eq!((e.cidr(), e.port), ("10.0.0.0/8".into(), Some(5432)));
        let e = parse_egress("0.0.0.0/0").unwrap();
        assert_eq!((e.cidr(), e.port), ("0.0.0.0/0".into(), None));
        let e = parse_egress("fd00::/8:443").unwrap();
        assert_eq!((e.cidr(), e.port), ("fd00::/8".into(), Some(443)));
        assert!(parse_egress("10.1.2.3/32").is_ok());
        assert!(parse_egress("::1/128").is_ok());
        for (text, error) in [
            ("10.0.0.0", "no prefix length"),
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.0.0.1/8", "bits set past its prefix"),
            ("10.0.0.0/8:0", "1 to 65535"),
            ("10.0.0.0/8:70000", "1 to 65535"),
            ("example.com/8", "not an IP address"),
        ] {
            let e = parse_egress(text).unwrap_err();
            assert!(e.contains(error), "{text}: {e}");
        }
    }

    #[test]
    fn cron_schedules_have_five_fields() {
        assert!(is_cron_schedule("0 3 * * *"));
        assert!(is_cron_schedule("*/15 0-6 1,15 JAN-JUN MON-FRI"));
        assert!(!is_cron_schedule("0 3 * *"));
        assert!(!is_cron_schedule("@daily"));
        assert!(!is_cron_schedule("TZ=UTC 0 3 * * *"));
    }
}
