//! From text to a [`ValidFleet`]: read, parse, overlay the environment, decode, check and
//! render — collecting every diagnostic on the way.

use crate::de::{Recover, Sink, Spanned, decode};
use crate::diag::{Diagnostic, Source, Span, did_you_mean};
use crate::model::*;
use crate::raw::*;
use crate::template::{Host, Mode, Scope, Templates};
use crate::yaml::{self, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod kubernetes;
mod notifications;
mod state;
mod tracing;
pub use kubernetes::{DNS_LABEL_RULE, DNS_SUBDOMAIN_RULE, is_dns_label, is_dns_subdomain};

/// Fleet files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// The listen address when the file sets none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";

/// How to load a fleet file.
#[derive(Clone)]
pub struct LoadOptions {
    /// The `environments.<name>` overlay to apply.
    pub environment: Option<String>,
    /// Where `env()` and secret files are looked up.
    pub host: Arc<dyn Host>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            environment: None,
            host: Arc::new(crate::template::SystemHost),
        }
    }
}

/// The result of checking a fleet file.
#[derive(Debug)]
pub struct Checked {
    pub source: Source,
    /// The fleet as far as it could be understood; `None` when the file is not readable YAML.
    /// It is trustworthy only when [`Checked::is_valid`].
    pub fleet: Option<ValidFleet>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn is_valid(&self) -> bool {
        self.fleet.is_some() && !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The fleet, if there is no error.
    ///
    /// # Errors
    /// The diagnostics (errors and warnings) when any of them is an error.
    pub fn into_valid(self) -> Result<ValidFleet, Vec<Diagnostic>> {
        match self.fleet {
            Some(fleet) if !self.diagnostics.iter().any(Diagnostic::is_error) => Ok(fleet),
            _ => Err(self.diagnostics),
        }
    }
}

/// The file could not be read at all (as opposed to: it was read and is invalid).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Reads and checks a fleet file.
///
/// # Errors
/// [`ReadError`] when the file cannot be opened or read; everything else is a diagnostic.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Checked, ReadError> {
    let read_error = |source| ReadError {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let name = path.display().to_string();
    if meta.len() > MAX_FILE_BYTES as u64 {
        let d = Diagnostic::error(
            format!(
                "the file is {:.1} MiB; fleet files are limited to {} MiB",
                meta.len() as f64 / 1048576.0,
                MAX_FILE_BYTES >> 20
            ),
            None,
        )
        .with_help(
            "is this the right file? A fleet of thousands of servers fits in well under 1 MiB",
        );
        return Ok(Checked {
            source: Source::new(name, ""),
            fleet: None,
            diagnostics: vec![d],
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(load_bytes(&name, &bytes, base_dir, options))
}

/// Checks a fleet file given as bytes (`name` is used in diagnostics).
pub fn load_bytes(name: &str, bytes: &[u8], base_dir: PathBuf, options: &LoadOptions) -> Checked {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(name, text, base_dir, options),
        Err(e) => {
            let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned();
            let line = valid.matches('\n').count() as u32 + 1;
            let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
            let d = Diagnostic::error(
                "the file is not UTF-8 text",
                Some(Span::point(line, column)),
            )
            .with_help("fleet files are UTF-8 YAML; is this a binary file?");
            Checked {
                source: Source::new(name, valid),
                fleet: None,
                diagnostics: vec![d],
            }
        }
    }
}

/// Checks fleet-file text.
pub fn load_str(name: &str, text: &str, base_dir: PathBuf, options: &LoadOptions) -> Checked {
    let source = Source::new(name, text);
    if text.len() > MAX_FILE_BYTES {
        let d = Diagnostic::error(
            format!("the text is larger than {} MiB", MAX_FILE_BYTES >> 20),
            None,
        );
        return Checked {
            source,
            fleet: None,
            diagnostics: vec![d],
        };
    }
    if let Some((i, _)) = text.char_indices().find(|(_, c)| *c == '\0') {
        let before = &text[..i];
        let line = before.matches('\n').count() as u32 + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
        let d = Diagnostic::error(
            "the file contains a NUL byte",
            Some(Span::point(line, column)),
        )
        .with_help("fleet files are YAML text; is this a binary file?");
        return Checked {
            source,
            fleet: None,
            diagnostics: vec![d],
        };
    }
    let mut root = match yaml::parse(text) {
        Ok(root) => root,
        Err(d) => {
            return Checked {
                source,
                fleet: None,
                diagnostics: vec![d],
            };
        }
    };
    if !matches!(root.value, yaml::Value::Map(_)) {
        let d = Diagnostic::error(
            format!(
                "a fleet file is a mapping, but this file holds {}",
                root.kind()
            ),
            Some(root.span),
        )
        .with_help(
            "start with `version: 1`, `name: …` and `servers:`; `mcpfleet init` writes an example",
        );
        return Checked {
            source,
            fleet: None,
            diagnostics: vec![d],
        };
    }
    let mut diagnostics = Vec::new();
    if let Some(env) = &options.environment
        && let Err(d) = apply_environment(&mut root, env)
    {
        diagnostics.push(d);
    }
    let sink = Sink::default();
    let raw: Option<RawFleet> = decode(&root, &sink);
    diagnostics.extend(sink.into_inner());
    let fleet = raw.map(|raw| {
        let mut v = Validator {
            diags: Vec::new(),
            host: options.host.clone(),
            base_dir: base_dir.clone(),
        };
        let fleet = v.fleet(raw, options.environment.clone());
        diagnostics.extend(v.diags);
        fleet
    });
    diagnostics.sort_by_key(|d| (d.span.map(|s| (s.line, s.column)), d.severity));
    diagnostics.dedup();
    Checked {
        source,
        fleet,
        diagnostics,
    }
}

fn apply_environment(root: &mut Node, env: &str) -> Result<(), Diagnostic> {
    let envs = root.get("environments");
    let names: Vec<&str> = match envs.map(|e| &e.value) {
        Some(yaml::Value::Map(entries)) => entries.iter().filter_map(|(k, _)| k.as_str()).collect(),
        _ => Vec::new(),
    };
    let Some(overlay) = envs.and_then(|e| e.get(env)).cloned() else {
        let mut d = Diagnostic::error(
            format!("environment `{env}` is not defined in this file"),
            envs.map(|e| e.span),
        );
        d = match did_you_mean(env, names.iter().copied()) {
            Some(s) => d.with_help(format!("did you mean `--env {s}`?")),
            None if names.is_empty() => {
                d.with_help("add it under `environments:`, or drop `--env`")
            }
            None => d.with_help(format!("defined environments: {}", names.join(", "))),
        };
        return Err(d);
    };
    // The overlay is checked as part of `environments`; here it only changes the base.
    if matches!(overlay.value, yaml::Value::Map(_)) {
        root.merge(overlay);
    }
    Ok(())
}

/// Checks raw values and builds model values, recording every problem.
struct Validator {
    diags: Vec<Diagnostic>,
    host: Arc<dyn Host>,
    base_dir: PathBuf,
}

/// What [`is_valid_name`] accepts, as help for a refused name.
pub const NAME_RULE: &str = "use 1 to 63 characters: lowercase letters, digits, `-` and `_`, starting with a letter or digit";

/// Whether `name` may name a fleet, server or environment. Such names become path
/// components (state directories, instance logs), so the rule is also what keeps them
/// inside their directory.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn first<'a, T>(a: Option<&'a T>, b: Option<&'a T>) -> Option<&'a T> {
    a.or(b)
}

impl Validator {
    fn error(&mut self, message: impl Into<String>, span: Span) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(message, Some(span)));
        self.diags.last_mut().expect("just pushed")
    }

    fn warning(&mut self, message: impl Into<String>, span: Span) -> &mut Diagnostic {
        self.diags.push(Diagnostic::warning(message, Some(span)));
        self.diags.last_mut().expect("just pushed")
    }

    fn fleet(&mut self, raw: RawFleet, environment: Option<String>) -> ValidFleet {
        match &raw.version {
            None => {
                self.error("missing `version`", Span::point(1, 1)).help =
                    Some("add `version: 1` at the top of the file".into());
            }
            Some(v) if v.value != 1 => {
                self.error(format!("unsupported version {}", v.value), v.span)
                    .help = Some("this mcpfleet reads `version: 1`".into());
            }
            Some(_) => {}
        }
        let name = match &raw.name {
            None => {
                self.error("missing `name`", Span::point(1, 1)).help =
                    Some("add `name: my-fleet`; it names the fleet's state directory".into());
                String::new()
            }
            Some(n) => {
                if !is_valid_name(&n.value) {
                    self.error(format!("invalid fleet name `{}`", n.value), n.span)
                        .help = Some(NAME_RULE.into());
                }
                n.value.clone()
            }
        };
        if let Recover(Some(envs)) = &raw.environments {
            for (env_name, _) in &envs.0 {
                if !is_valid_name(&env_name.value) {
                    self.error(
                        format!("invalid environment name `{}`", env_name.value),
                        env_name.span,
                    )
                    .help = Some(NAME_RULE.into());
                }
            }
        }

        let secrets = self.secrets(raw.secrets.0.as_ref());
        // Every declared name counts, even one with a broken source: its error is reported
        // once, at the declaration, not again at each use.
        let declared: BTreeMap<String, Option<SecretRef>> = raw
            .secrets
            .0
            .iter()
            .flat_map(|s| &s.0)
            .map(|(name, _)| (name.value.clone(), secrets.get(&name.value).cloned()))
            .collect();
        // Vars may use env() and secret(), but not other vars: their order would matter.
        let bootstrap = Templates::new(
            self.host.clone(),
            BTreeMap::new(),
            declared.clone(),
            Mode::Plan,
        );
        let mut vars = BTreeMap::new();
        for (key, value) in raw.vars.0.iter().flat_map(|v| &v.0) {
            let text = self.render(&bootstrap, value, Scope::FLEET);
            vars.insert(key.value.clone(), text);
        }
        let shown = vars
            .iter()
            .map(|(k, v): (&String, &Text)| (k.clone(), v.shown.clone()))
            .collect();
        let templates = Templates::new(self.host.clone(), shown, declared, Mode::Plan);
        let runtime = raw
            .runtime
            .get()
            .map_or_else(RuntimeKind::default, |r| r.value);
        let kubernetes = self.kubernetes(&raw, &name);
        let gateway = self.gateway(raw.gateway.0.as_ref(), &raw.servers, &templates);
        let admin = self.admin(raw.admin.0.as_ref(), &gateway);
        let notifications = self.notifications(raw.notifications.0.as_ref(), &templates);
        let logging = Logging {
            format: raw
                .logging
                .0
                .as_ref()
                .and_then(|l| l.format.as_ref())
                .map_or_else(LogFormat::default, |f| f.value),
        };
        let tracing = self.tracing(raw.tracing.0.as_ref(), &templates);
        let state = self.state(raw.state.0.as_ref(), &templates);
        let defaults = raw.defaults.0.unwrap_or_default();

        let mut servers = Vec::new();
        for (name, server) in &raw.servers.0 {
            if !is_valid_name(&name.value) {
                self.error(format!("invalid server name `{}`", name.value), name.span)
                    .help = Some(format!("{NAME_RULE}; the name is part of the server's URL"));
            }
            if let Recover(Some(server)) = server {
                servers.push(self.server(name, server, &defaults, &templates));
            }
        }
        if raw.servers.0.is_empty() {
            self.warning(
                "the fleet has no servers",
                raw.name.as_ref().map_or(Span::point(1, 1), |n| n.span),
            )
            .help = Some("add servers under `servers:`".into());
        }
        self.check_dependencies(&mut servers, &raw.servers);

        let used = templates
            .used_secrets()
            .into_iter()
            .chain(bootstrap.used_secrets())
            .collect::<BTreeSet<_>>();
        for (name, _) in raw.secrets.0.iter().flat_map(|s| &s.0) {
            if !used.contains(&name.value) {
                self.warning(
                    format!("secret `{}` is declared but never used", name.value),
                    name.span,
                )
                .help = Some(format!(
                    "use it as {{{{ secret('{}') }}}}, or remove it",
                    name.value
                ));
            }
        }
        ValidFleet {
            name,
            environment,
            base_dir: self.base_dir.clone(),
            vars,
            secrets,
            runtime,
            kubernetes,
            gateway,
            admin,
            notifications,
            servers,
            logging,
            tracing,
            state,
        }
    }

    fn secrets(&mut self, raw: Option<&Named<Recover<RawSecret>>>) -> BTreeMap<String, SecretRef> {
        let mut out = BTreeMap::new();
        for (name, secret) in raw.into_iter().flat_map(|s| &s.0) {
            let Recover(Some(secret)) = secret else {
                continue;
            };
            let reference = match (&secret.env, &secret.file) {
                (Some(env), None) => {
                    if env.value.is_empty() || env.value.contains(['=', '\0']) {
                        self.error(
                            format!("invalid environment variable name `{}`", env.value),
                            env.span,
                        );
                    } else if self.host.env_var(&env.value).is_none() {
                        self.warning(
                            format!(
                                "secret `{}` reads ${}, which is not set here",
                                name.value, env.value
                            ),
                            env.span,
                        )
                        .help = Some("servers using it will fail to start until it is set".into());
                    }
                    SecretRef::Env(env.value.clone())
                }
                (None, Some(file)) => {
                    let path = self.base_dir.join(&file.value);
                    if !self.host.file_exists(&path) {
                        self.warning(format!("secret file `{}` does not exist", path.display()), file.span).help =
                            Some("servers using it will fail to start until it exists; paths are relative to the fleet file".into());
                    }
                    SecretRef::File(path)
                }
                (Some(_), Some(file)) => {
                    self.error(
                        format!("secret `{}` sets both `env` and `file`", name.value),
                        file.span,
                    )
                    .help = Some("keep one source".into());
                    continue;
                }
                (None, None) => {
                    self.error(format!("secret `{}` has no source", name.value), name.span)
                        .help = Some("write `{ env: VARIABLE }` or `{ file: ./path }`".into());
                    continue;
                }
            };
            out.insert(name.value.clone(), reference);
        }
        out
    }

    /// `gateway.session_keys`: each must read a secret (a key written in the file would
    /// be kept in every revision the store records). Their length is checked when a
    /// gateway reads them.
    fn session_keys(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        templates: &Templates,
    ) -> (Vec<Text>, BTreeSet<String>) {
        let mut keys = Vec::new();
        let mut all_secrets = BTreeSet::new();
        for key in raw.map(|r| r.value.as_slice()).unwrap_or_default() {
            let (text, secrets) =
                templates.noting_secrets(|| self.render(templates, key, Scope::FLEET));
            if secrets.is_empty() {
                self.error("a session key is written in the file", key.span).help = Some(
                    "it would be kept in every revision the store records: declare a secret and write `\"{{ secret('gateway_session_key') }}\"`"
                        .into(),
                );
            }
            all_secrets.extend(secrets);
            keys.push(text);
        }
        (keys, all_secrets)
    }

    fn gateway(
        &mut self,
        raw: Option<&RawGateway>,
        servers: &Named<Recover<RawServer>>,
        templates: &Templates,
    ) -> Gateway {
        let default_listen: SocketAddr = DEFAULT_LISTEN.parse().expect("constant address");
        let listen = match raw.and_then(|g| g.listen.as_ref()) {
            None => default_listen,
            Some(l) => {
                match l.value.parse::<SocketAddr>() {
                    Ok(a) => a,
                    Err(_) => {
                        self.error(format!("`{}` is not an IP:PORT address", l.value), l.span).help =
                        Some("write e.g. `127.0.0.1:7470` or `[::1]:7470`; host names are not resolved".into());
                        default_listen
                    }
                }
            }
        };
        let mut tokens = Vec::new();
        let mut names = BTreeSet::new();
        for token in raw
            .and_then(|g| g.auth.as_ref())
            .map(|a| a.tokens.as_slice())
            .unwrap_or_default()
        {
            let t = &token.value;
            self.token_identity(&mut names, &t.name, &t.sha256, "mcpfleet token create NAME");
            for s in &t.servers {
                if s.value != "*" && !servers.0.iter().any(|(n, _)| n.value == s.value) {
                    let d = self.error(
                        format!(
                            "token `{}` names unknown server `{}`",
                            t.name.value, s.value
                        ),
                        s.span,
                    );
                    d.label =
                        did_you_mean(&s.value, servers.0.iter().map(|(n, _)| n.value.as_str()))
                            .map(|m| format!("did you mean `{m}`?"));
                }
            }
            if t.servers.is_empty() {
                self.error(
                    format!("token `{}` reaches no server", t.name.value),
                    token.span,
                )
                .help =
                    Some("list servers it may reach under `servers:`, or `[\"*\"]` for all".into());
            }
            tokens.push(TokenRef {
                name: t.name.value.clone(),
                sha256: t.sha256.value.clone(),
                servers: t.servers.iter().map(|s| s.value.clone()).collect(),
            });
        }
        if !listen.ip().is_loopback() && tokens.is_empty() {
            let span = raw
                .and_then(|g| g.listen.as_ref())
                .map_or(Span::point(1, 1), |l| l.span);
            self.error(format!("the gateway would listen on {listen} without authentication"), span).help =
                Some("add tokens under `gateway.auth.tokens` (mcpfleet token create NAME), or listen on 127.0.0.1".into());
        }
        let raw_tls = raw.and_then(|g| g.tls.as_ref());
        let tls = raw_tls.and_then(|t| self.gateway_tls(t));
        // A `tls` with an error has its own message.
        if !listen.ip().is_loopback() && raw_tls.is_none() {
            let span = raw
                .and_then(|g| g.listen.as_ref())
                .map_or(Span::point(1, 1), |l| l.span);
            self.error(format!("the gateway would listen on {listen} without TLS"), span).help =
                Some("bearer tokens in plain HTTP are readable on the network: add `gateway.tls: { cert: ./gateway.crt, key: ./gateway.key }`, or `gateway.tls: { terminated_by: proxy }` when an Ingress or proxy in front ends TLS, or listen on 127.0.0.1".into());
        }
        let rate_limit = raw
            .and_then(|g| g.rate_limit.as_ref())
            .and_then(|r| self.rate_limit(r));
        let (session_keys, session_key_secrets) =
            self.session_keys(raw.and_then(|g| g.session_keys.as_ref()), templates);
        Gateway {
            listen,
            listen_span: raw.and_then(|g| g.listen.as_ref()).map(|l| l.span),
            tokens,
            rate_limit,
            max_requests_in_flight: self.count(
                raw.and_then(|g| g.max_requests_in_flight.as_ref()),
                Gateway::DEFAULT_MAX_REQUESTS_IN_FLIGHT,
                1,
                "max_requests_in_flight",
            ),
            max_sessions: self.count(
                raw.and_then(|g| g.max_sessions.as_ref()),
                Gateway::DEFAULT_MAX_SESSIONS,
                1,
                "max_sessions",
            ),
            max_sessions_per_token: self.count(
                raw.and_then(|g| g.max_sessions_per_token.as_ref()),
                Gateway::DEFAULT_MAX_SESSIONS_PER_TOKEN,
                1,
                "max_sessions_per_token",
            ),
            session_idle_timeout: self.duration(
                raw.and_then(|g| g.session_idle_timeout.as_ref()),
                Gateway::DEFAULT_SESSION_IDLE_TIMEOUT,
            ),
            upstream_timeout: self.duration(
                raw.and_then(|g| g.upstream_timeout.as_ref()),
                Gateway::DEFAULT_UPSTREAM_TIMEOUT,
            ),
            tls,
            header_read_timeout: self.duration(
                raw.and_then(|g| g.header_read_timeout.as_ref()),
                Gateway::DEFAULT_HEADER_READ_TIMEOUT,
            ),
            body_read_timeout: self.duration(
                raw.and_then(|g| g.body_read_timeout.as_ref()),
                Gateway::DEFAULT_BODY_READ_TIMEOUT,
            ),
            idle_timeout: self.duration(
                raw.and_then(|g| g.idle_timeout.as_ref()),
                Gateway::DEFAULT_IDLE_TIMEOUT,
            ),
            session_keys,
            session_key_secrets,
        }
    }

    /// What gateway and admin tokens share: a name unique among `names` (the other
    /// tokens of its list) and a hash that is 64 lowercase hex characters. `create` is the
    /// command that makes such a token.
    fn token_identity(
        &mut self,
        names: &mut BTreeSet<String>,
        name: &Spanned<String>,
        sha256: &Spanned<String>,
        create: &str,
    ) {
        if !names.insert(name.value.clone()) {
            self.error(format!("duplicate token name `{}`", name.value), name.span);
        }
        let hash = &sha256.value;
        if hash.len() != 64
            || !hash
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            self.error("`sha256` must be 64 lowercase hex characters", sha256.span)
                .help = Some(format!(
                "store the token's SHA-256, never the token: `{create}` prints both"
            ));
        }
    }

    /// A `gateway.tls` file, resolved against the fleet file's directory. Only warned
    /// about when missing: it may be written before the fleet starts.
    fn tls_file(&mut self, file: &Spanned<String>) -> PathBuf {
        let path = self.base_dir.join(&file.value);
        if !self.host.file_exists(&path) {
            self.warning(
                format!("TLS file `{}` does not exist", path.display()),
                file.span,
            )
            .help = Some(
                "the gateway will not start until it exists; paths are relative to the fleet file"
                    .into(),
            );
        }
        path
    }

    /// `gateway.tls`: both files, or who terminates TLS instead; `None` after an error.
    fn gateway_tls(&mut self, raw: &Spanned<RawGatewayTls>) -> Option<GatewayTls> {
        let t = &raw.value;
        match (&t.cert, &t.key, &t.terminated_by) {
            (Some(cert), Some(key), None) => Some(GatewayTls::Files {
                cert: self.tls_file(cert),
                key: self.tls_file(key),
            }),
            (None, None, Some(by)) => match by.value {
                TlsTerminator::Proxy => Some(GatewayTls::TerminatedByProxy),
            },
            (Some(_) | None, Some(_) | None, Some(by)) => {
                self.error("`terminated_by` and `cert`/`key` exclude each other", by.span).help =
                    Some("keep `cert` and `key` for TLS served by the gateway, or `terminated_by: proxy` alone when TLS ends in front of it".into());
                None
            }
            (Some(_), None, None) => {
                self.error("`gateway.tls` has a `cert` but no `key`", raw.span)
                    .help =
                    Some("add `key: ./gateway.key` (the certificate's private key, PEM)".into());
                None
            }
            (None, Some(_), None) => {
                self.error("`gateway.tls` has a `key` but no `cert`", raw.span)
                    .help = Some(
                    "add `cert: ./gateway.crt` (the certificate chain, PEM, leaf first)".into(),
                );
                None
            }
            (None, None, None) => {
                self.error("`gateway.tls` is empty", raw.span).help =
                    Some("write `{ cert: ./gateway.crt, key: ./gateway.key }`, or `{ terminated_by: proxy }` when an Ingress or proxy in front of the gateway ends TLS".into());
                None
            }
        }
    }

    fn rate_limit(&mut self, raw: &RawRateLimit) -> Option<RateLimit> {
        let per_second = raw.per_second.value;
        if !(per_second.is_finite() && per_second > 0.0) {
            self.error("`per_second` must be a number above zero", raw.per_second.span)
                .help = Some("e.g. `per_second: 20`, or `0.5` for one request every 2 s; remove `rate_limit` for none".into());
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let default_burst = per_second.ceil().min(f64::from(u32::MAX)) as u32;
        let burst = self.count(raw.burst.as_ref(), default_burst.max(1), 1, "burst");
        Some(RateLimit { per_second, burst })
    }

    /// `admin`: the TCP listener, which serves reads without authentication and so stays
    /// on loopback, and the admin tokens, which must differ from every gateway token (one
    /// secret never opens both the servers and the fleet's steering).
    fn admin(&mut self, raw: Option<&RawAdmin>, gateway: &Gateway) -> Admin {
        let Some(raw) = raw else {
            return Admin::default();
        };
        let mut tokens = Vec::new();
        let mut names = BTreeSet::new();
        for token in &raw.tokens {
            let t = &token.value;
            self.token_identity(
                &mut names,
                &t.name,
                &t.sha256,
                "mcpfleet token create NAME --admin",
            );
            if let Some(shared) = gateway.tokens.iter().find(|g| g.sha256 == t.sha256.value) {
                self.error(
                    format!(
                        "admin token `{}` is also gateway token `{}`",
                        t.name.value, shared.name
                    ),
                    t.sha256.span,
                )
                .help = Some("admin and gateway tokens must be different secrets: create one with `mcpfleet token create NAME --admin`".into());
            }
            tokens.push(AdminTokenRef {
                name: t.name.value.clone(),
                sha256: t.sha256.value.clone(),
            });
        }
        let Some(l) = &raw.listen else {
            if let Some(first) = raw.tokens.first() {
                self.warning("admin tokens without `admin.listen` are never asked for", first.span)
                    .help = Some("admin tokens are asked for on the admin TCP listener only: add `listen: 127.0.0.1:7471` (the unix socket needs no token)".into());
            }
            return Admin {
                listen: None,
                tokens,
            };
        };
        let Ok(listen) = l.value.parse::<SocketAddr>() else {
            self.error(format!("`{}` is not an IP:PORT address", l.value), l.span)
                .help = Some(
                "write e.g. `127.0.0.1:7471` or `[::1]:7471`; host names are not resolved".into(),
            );
            return Admin {
                listen: None,
                tokens,
            };
        };
        if !listen.ip().is_loopback() {
            self.error(format!("the admin API would listen on {listen}, which is not a loopback address"), l.span).help =
                Some("it answers reads without authentication: bind it to loopback (`127.0.0.1:7471`) and put an authenticating proxy in front".into());
            return Admin {
                listen: None,
                tokens,
            };
        }
        Admin {
            listen: Some(listen),
            tokens,
        }
    }

    fn render(&mut self, templates: &Templates, text: &Spanned<String>, scope: Scope<'_>) -> Text {
        match templates.render(&text.value, scope) {
            Ok(shown) => Text {
                template: text.value.clone(),
                shown,
            },
            Err(e) => {
                self.error(e.message, text.span).help = e.help;
                Text {
                    template: text.value.clone(),
                    shown: text.value.clone(),
                }
            }
        }
    }

    /// The program or image of a `stdio:` or `http:` block, with its arguments and
    /// environment; `container` is the server's `container:` block.
    fn command(
        &mut self,
        t: &Templates,
        scope: Scope<'_>,
        keys: CommandKeys<'_>,
        container: Option<&Spanned<RawContainer>>,
    ) -> Command {
        let CommandKeys {
            kind,
            block,
            command,
            image,
            args,
            env,
            cwd,
        } = keys;
        let executable = match (image, command) {
            (Some(image), command) => {
                let image = self.image(t, scope, image);
                let command = command.map(|c| {
                    let entrypoint = self.render(t, c, scope);
                    if entrypoint.shown.trim().is_empty() {
                        self.error("the command is empty", c.span).help =
                            Some("leave `command` out to run the image's own entrypoint".into());
                    }
                    entrypoint
                });
                let container = self.container(t, scope, container, kind);
                Executable::Image {
                    image,
                    digest: None,
                    command,
                    container,
                }
            }
            (None, Some(command)) => Executable::Program {
                command: self.program(t, scope, command, args),
            },
            (None, None) => {
                self.error(
                    format!("the `{kind}` block names neither `command` nor `image`"),
                    block,
                )
                .help = Some(
                    "give `command:` to run a local program, or `image:` to run a container".into(),
                );
                Executable::Program {
                    command: Text {
                        template: String::new(),
                        shown: String::new(),
                    },
                }
            }
        };
        let cwd = cwd.map(|c| {
            let dir = self.render(t, c, scope);
            if image.is_some() && !dir.shown.starts_with('/') {
                self.error(
                    format!("`{}` is not an absolute path", dir.shown),
                    c.span,
                )
                .help = Some(
                    "with `image`, `cwd` is the working directory inside the container: write an absolute path such as `/data`"
                        .into(),
                );
            }
            dir
        });
        let mut vars = BTreeMap::new();
        for (key, value) in &env.0 {
            if key.value.is_empty() || key.value.contains(['=', '\0']) {
                self.error(
                    format!("invalid environment variable name `{}`", key.value),
                    key.span,
                );
            }
            let text = self.render(t, value, scope);
            if image.is_some() {
                self.no_secret_in_container_config(&text, value.span, "environment");
            }
            vars.insert(key.value.clone(), text);
        }
        let args = args
            .iter()
            .map(|a| {
                let text = self.render(t, a, scope);
                if image.is_some() {
                    self.no_secret_in_container_config(&text, a.span, "command line");
                }
                text
            })
            .collect();
        if let (
            Some(c),
            Executable::Image {
                command: Some(entrypoint),
                ..
            },
        ) = (command, &executable)
        {
            self.no_secret_in_container_config(entrypoint, c.span, "command line");
        }
        Command {
            executable,
            args,
            env: vars,
            cwd,
        }
    }

    /// A container's environment and command line are part of its configuration, which
    /// the engine shows to anyone who may `inspect` it: a secret there is an error.
    fn no_secret_in_container_config(&mut self, text: &Text, span: Span, part: &str) {
        if text.shown.contains("***") {
            self.error(
                format!("a secret in a container's {part} is shown by the container engine's `inspect`"),
                span,
            )
            .help = Some(
                "hand it over as a file instead: `container: { secrets: { /run/secrets/NAME: NAME } }`, and have the server read that file (e.g. `--token-file /run/secrets/NAME`)".into(),
            );
        }
    }

    /// A local program: a path or a name on `PATH`, never a shell line.
    fn program(
        &mut self,
        t: &Templates,
        scope: Scope<'_>,
        command: &Spanned<String>,
        args: &[Spanned<String>],
    ) -> Text {
        let program = self.render(t, command, scope);
        if program.shown.trim().is_empty() {
            self.error("the command is empty", command.span).help =
                Some("name the program to run; its arguments go in `args:`".into());
        } else if program.template.contains(' ')
            && args.is_empty()
            && !Path::new(&program.shown).exists()
        {
            self.error(
                format!(
                    "`{}` looks like a shell line, but commands are not run by a shell",
                    program.shown
                ),
                command.span,
            )
            .help = Some("put the program in `command:` and each argument in `args:`".into());
        }
        program
    }

    /// An image reference. It is shown in plans and status and is the same for every
    /// instance, so it may use `var()` and `env()` but no secret and no per-instance value.
    fn image(&mut self, t: &Templates, scope: Scope<'_>, raw: &Spanned<String>) -> Text {
        let reported = self.diags.len();
        let image = self.render(t, raw, scope);
        if self.diags.len() > reported {
            // Its template error is reported; the raw template is not worth more errors.
            return image;
        }
        let shown = image.shown.as_str();
        if shown.trim().is_empty() {
            self.error("the image is empty", raw.span).help =
                Some("name an image, e.g. `ghcr.io/org/server:1.2`".into());
        } else if shown.contains("***") {
            self.error("the image reference uses a secret", raw.span).help = Some(
                "image references are shown in plans and status: use `var()` or `env()`, and give registry credentials to the container engine".into(),
            );
        } else if shown.contains(['<', '>']) {
            self.error("the image must be the same for every instance", raw.span)
                .help = Some(
                "`port`, `revision`, `random_string()` and `now()` differ per instance; use `var()` or `env()`".into(),
            );
        } else if shown.contains(char::is_whitespace) {
            self.error(
                format!("`{shown}` is not an image reference: it contains whitespace"),
                raw.span,
            )
            .help =
                Some("write `NAME:TAG` or `NAME@sha256:DIGEST`; arguments go in `args:`".into());
        }
        image
    }

    /// The `container:` block of an image server (absent: every default). `kind` is the
    /// transport, which decides the default network.
    fn container(
        &mut self,
        t: &Templates,
        scope: Scope<'_>,
        raw: Option<&Spanned<RawContainer>>,
        kind: &str,
    ) -> Container {
        let default = RawContainer::default();
        let c = raw.map_or(&default, |c| &c.value);
        let user = c.user.as_ref().map(|u| {
            let valid = |part: &str| !part.is_empty() && !part.contains(char::is_whitespace);
            let ok = match u.value.split_once(':') {
                Some((user, group)) => valid(user) && valid(group) && !group.contains(':'),
                None => valid(&u.value),
            };
            if !ok {
                self.error(format!("`{}` is not a user", u.value), u.span).help = Some(
                    "write a user name or UID, optionally with `:GROUP` or `:GID`, e.g. `1000:1000`"
                        .into(),
                );
            }
            u.value.clone()
        });
        let network = match &c.network {
            None if kind == "http" => ContainerNetwork::Bridge,
            None => ContainerNetwork::None,
            Some(n) => self.network(n, kind),
        };
        let resources = c
            .resources
            .as_ref()
            .map(|r| self.resources(&r.value))
            .unwrap_or_default();
        let mut volumes: Vec<Volume> = Vec::new();
        for text in c.volumes.iter().flatten() {
            let Some(volume) = self.volume(text) else {
                continue;
            };
            if volumes.iter().any(|v| v.target == volume.target) {
                self.error(
                    format!("two volumes are mounted at `{}`", volume.target),
                    text.span,
                );
            }
            volumes.push(volume);
        }
        let mut secrets: Vec<SecretFile> = Vec::new();
        for (target, name) in c.secrets.iter().flat_map(|s| &s.0) {
            let Some(file) = self.secret_file(t, scope, target, name) else {
                continue;
            };
            if secrets.iter().any(|s| s.target == file.target)
                || volumes.iter().any(|v| v.target == file.target)
            {
                self.error(format!("two mounts are at `{}`", file.target), target.span)
                    .help = Some("give each secret its own path".into());
            }
            secrets.push(file);
        }
        Container {
            user,
            network,
            resources,
            volumes,
            read_only: c.read_only.as_ref().is_none_or(|r| r.value),
            pull: c.pull.as_ref().map_or(Pull::IfMissing, |p| p.value),
            secrets,
        }
    }

    /// One entry of `container.secrets`: an absolute path in the container → a declared
    /// secret's name; `None` after an error.
    fn secret_file(
        &mut self,
        t: &Templates,
        scope: Scope<'_>,
        target: &Spanned<String>,
        name: &Spanned<String>,
    ) -> Option<SecretFile> {
        let path = target.value.as_str();
        let problem = if !path.starts_with('/') {
            Some("is not an absolute path")
        } else if path.ends_with('/') {
            Some("names a directory, not a file")
        } else if path.split('/').any(|part| part == "..") {
            Some("contains `..`")
        } else if path.contains([':', ',', '\0']) {
            // The engine's mount syntax separates its fields with these.
            Some("contains `:` or `,`")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.error(format!("the secret's path `{path}` {problem}"), target.span)
                .help = Some(
                "write the absolute path of the file inside the container, e.g. `/run/secrets/token`".into(),
            );
            return None;
        }
        // Read like `{{ secret('name') }}` everywhere else: the same errors for an unknown
        // name, and the secret counts as used.
        let template = format!(
            "{{{{ secret({}) }}}}",
            serde_json::Value::from(name.value.as_str())
        );
        match t.render(&template, scope) {
            Ok(shown) => Some(SecretFile {
                target: path.to_owned(),
                secret: name.value.clone(),
                value: Text { template, shown },
            }),
            Err(e) => {
                self.error(e.message, name.span).help = e.help;
                None
            }
        }
    }

    fn network(&mut self, raw: &Spanned<String>, kind: &str) -> ContainerNetwork {
        match raw.value.as_str() {
            "none" if kind == "http" => {
                self.error(
                    "an http server's port cannot be published with `network: none`",
                    raw.span,
                )
                .help =
                    Some("use `network: bridge` (the default for http) or a named network".into());
                ContainerNetwork::None
            }
            "none" => ContainerNetwork::None,
            "bridge" => ContainerNetwork::Bridge,
            "host" => {
                self.error(
                    "`network: host` would share the host's network with the container",
                    raw.span,
                )
                .help = Some(
                    "use `none`, `bridge` or a named network; an http server's port is published on 127.0.0.1".into(),
                );
                ContainerNetwork::None
            }
            name if is_engine_name(name) => ContainerNetwork::Named(name.to_string()),
            name => {
                self.error(format!("`{name}` is not a network name"), raw.span)
                    .help = Some(format!(
                    "write `none`, `bridge` or a network's name: {ENGINE_NAME_RULE}"
                ));
                ContainerNetwork::None
            }
        }
    }

    fn resources(&mut self, raw: &RawResources) -> Resources {
        let cpus = raw.cpus.as_ref().and_then(|c| {
            if c.value.is_finite() && c.value > 0.0 {
                Some(c.value)
            } else {
                self.error("`cpus` must be a number above zero", c.span)
                    .help = Some("fractions are allowed: `0.5` is half a CPU".into());
                None
            }
        });
        let memory = raw.memory.as_ref().and_then(|m| self.memory(m));
        let pids = raw.pids.as_ref().and_then(|p| {
            if p.value == 0 {
                self.error("`pids` must be at least 1", p.span).help = Some(
                    "it caps the container's processes and threads; leave it out for no limit"
                        .into(),
                );
                None
            } else {
                Some(p.value)
            }
        });
        Resources { cpus, memory, pids }
    }

    /// A memory size in bytes; `None` after an error.
    fn memory(&mut self, raw: &Spanned<MemoryText>) -> Option<u64> {
        match parse_memory(&raw.value.0) {
            Ok(bytes) => Some(bytes),
            Err(message) => {
                self.error(format!("invalid memory size: {message}"), raw.span)
                    .help = Some(
                    "write bytes, or a number and a unit: `256Mi`, `1Gi` (powers of 1024), `512M`, `1G` (powers of 1000)".into(),
                );
                None
            }
        }
    }

    /// `SOURCE:TARGET[:ro|rw]`; `None` after an error.
    fn volume(&mut self, raw: &Spanned<String>) -> Option<Volume> {
        let parts: Vec<&str> = raw.value.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [source, target] => (*source, *target, false),
            [source, target, "ro"] => (*source, *target, true),
            [source, target, "rw"] => (*source, *target, false),
            [_, _, mode] => {
                self.error(format!("unknown volume mode `{mode}`"), raw.span)
                    .help = Some("use `ro` (read-only) or `rw` (read-write, the default)".into());
                return None;
            }
            _ => {
                self.error(format!("`{}` is not a volume", raw.value), raw.span).help = Some(
                    "write `SOURCE:TARGET` or `SOURCE:TARGET:ro`, e.g. `./data:/data:ro` or `cache:/cache`".into(),
                );
                return None;
            }
        };
        if !target.starts_with('/') {
            self.error(
                format!("the volume's target `{target}` is not an absolute path"),
                raw.span,
            )
            .help =
                Some("the target is where it appears inside the container, e.g. `/data`".into());
            return None;
        }
        let source = if source == "~" || source.starts_with("~/") {
            let Some(home) = self.host.env_var("HOME") else {
                self.error(
                    format!("`{source}` needs $HOME, which is not set here"),
                    raw.span,
                );
                return None;
            };
            VolumeSource::Path(normalize(
                &Path::new(&home).join(source.trim_start_matches(['~', '/'])),
            ))
        } else if source.starts_with('/')
            || source.starts_with("./")
            || source.starts_with("../")
            || source == "."
            || source == ".."
        {
            let joined = self.base_dir.join(source);
            match std::path::absolute(&joined) {
                Ok(path) => VolumeSource::Path(normalize(&path)),
                Err(e) => {
                    self.error(
                        format!("cannot resolve `{}`: {e}", joined.display()),
                        raw.span,
                    );
                    return None;
                }
            }
        } else if is_engine_name(source) {
            VolumeSource::Named(source.to_string())
        } else {
            self.error(
                format!("`{source}` is neither a host path nor a volume name"),
                raw.span,
            )
            .help = Some(format!(
                "start a host path with `/`, `./`, `../` or `~/`; a volume name: {ENGINE_NAME_RULE}"
            ));
            return None;
        };
        Some(Volume {
            source,
            target: target.to_string(),
            read_only,
        })
    }

    fn duration(&mut self, text: Option<&Spanned<DurationText>>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        match parse_duration(&text.value.0) {
            Ok(d) if d.is_zero() => {
                self.error("the duration must be longer than zero", text.span);
                default
            }
            Ok(d) => d,
            Err(message) => {
                self.error(format!("invalid duration: {message}"), text.span)
                    .help =
                    Some("write a number and a unit: `500ms`, `5s`, `2m`, `1h`, `1m30s`".into());
                default
            }
        }
    }

    fn count(&mut self, value: Option<&Spanned<u32>>, default: u32, min: u32, what: &str) -> u32 {
        match value {
            Some(v) if v.value < min => {
                self.error(format!("`{what}` must be at least {min}"), v.span);
                default
            }
            Some(v) => v.value,
            None => default,
        }
    }

    fn server(
        &mut self,
        name: &Spanned<String>,
        raw: &RawServer,
        defaults: &RawDefaults,
        t: &Templates,
    ) -> Server {
        let n = name.value.as_str();
        let transports: Vec<(&str, Span)> = [
            raw.stdio.as_ref().map(|s| ("stdio", s.span)),
            raw.http.as_ref().map(|s| ("http", s.span)),
            raw.remote.as_ref().map(|s| ("remote", s.span)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if transports.is_empty() {
            self.error(format!("server `{n}` has no transport"), name.span)
                .help = Some("give it exactly one of `stdio:`, `http:` or `remote:`".into());
        }
        if let [(a, _), (b, span), ..] = transports.as_slice() {
            self.error(format!("server `{n}` sets both `{a}` and `{b}`"), *span)
                .help =
                Some("a server has exactly one transport; split it into two servers".into());
        }
        let scope = Scope {
            server: Some(n),
            port: raw.http.is_some(),
        };
        let transport = if let Some(http) = &raw.http {
            let h = &http.value;
            let keys = CommandKeys {
                kind: "http",
                block: http.span,
                command: h.command.as_ref(),
                image: h.image.as_ref(),
                args: &h.args,
                env: &h.env,
                cwd: h.cwd.as_ref(),
            };
            let command = self.command(t, scope, keys, raw.container.as_ref());
            let path = h
                .path
                .as_ref()
                .map_or_else(|| "/mcp".to_string(), |p| p.value.clone());
            if let Some(p) = h.path.as_ref().filter(|p| !p.value.starts_with('/')) {
                self.error("`path` must start with `/`", p.span).help =
                    Some(format!("write `/{}`", p.value));
            }
            if let Some(port) = h.port.as_ref().filter(|p| p.value == 0) {
                self.error("port 0 cannot be reached", port.span).help =
                    Some("leave `port` out to let mcpfleet allocate one, and pass `{{ port }}` to the server".into());
            }
            let mentions_port = h
                .command
                .iter()
                .chain(&h.args)
                .chain(h.env.0.iter().map(|(_, v)| v))
                .any(|s| s.value.contains("port"));
            if h.port.is_none() && !mentions_port {
                self.warning(format!("http server `{n}` is never told which port to listen on"), http.span).help =
                    Some("pass the allocated port, e.g. `args: [\"--port\", \"{{ port }}\"]`, or set a fixed `port:`".into());
            }
            Transport::Http {
                command,
                path,
                port: h.port.as_ref().map(|p| p.value),
            }
        } else if let Some(stdio) = &raw.stdio {
            let s = &stdio.value;
            let keys = CommandKeys {
                kind: "stdio",
                block: stdio.span,
                command: s.command.as_ref(),
                image: s.image.as_ref(),
                args: &s.args,
                env: &s.env,
                cwd: s.cwd.as_ref(),
            };
            Transport::Stdio {
                command: self.command(t, scope, keys, raw.container.as_ref()),
                isolation: self.isolation(s),
            }
        } else if let Some(remote) = &raw.remote {
            let r = &remote.value;
            let url = self.render(t, &r.url, scope);
            self.check_url(&url, r.url.span, UrlUse::Server);
            let headers = r
                .headers
                .0
                .iter()
                .map(|(k, v)| (k.value.clone(), self.render(t, v, scope)))
                .collect();
            Transport::Remote { url, headers }
        } else {
            Transport::Stdio {
                command: Command {
                    executable: Executable::Program {
                        command: Text {
                            template: String::new(),
                            shown: String::new(),
                        },
                    },
                    args: vec![],
                    env: BTreeMap::new(),
                    cwd: None,
                },
                isolation: Isolation::default(),
            }
        };

        let has_image = raw.stdio.as_ref().is_some_and(|s| s.value.image.is_some())
            || raw.http.as_ref().is_some_and(|h| h.value.image.is_some());
        if let Some(container) = raw.container.as_ref().filter(|_| !has_image) {
            let help = if raw.remote.is_some() {
                "a remote server is not run by mcpfleet; remove `container:`"
            } else {
                "add `image:` to the transport block to run the server in a container, or remove `container:`"
            };
            self.error(
                "`container:` only applies to a server with `image:`",
                container.span,
            )
            .help = Some(help.into());
        }

        let replicas = self.count(raw.replicas.as_ref(), 1, 1, "replicas");
        if let (Some(r), true) = (&raw.replicas, replicas > 1) {
            if raw.remote.is_some() {
                self.error(
                    "a remote server cannot have replicas: mcpfleet does not run it",
                    r.span,
                );
            } else if raw
                .http
                .as_ref()
                // A container's port is its own; the runtime publishes each on another.
                .is_some_and(|h| h.value.port.is_some() && h.value.image.is_none())
            {
                self.error(
                    "replicas of an http server with a fixed `port` would collide",
                    r.span,
                )
                .help = Some(
                    "remove `port:` and pass `{{ port }}` so each replica gets its own".into(),
                );
            }
        }
        let depends_on = raw
            .depends_on
            .iter()
            .flat_map(|d| &d.value.0)
            .map(|d| Dependency {
                server: d.server.value.clone(),
                condition: d.condition.as_ref().map_or(Condition::Healthy, |c| c.value),
                span: d.server.span,
            });
        Server {
            name: n.to_string(),
            span: name.span,
            transport,
            depends_on: depends_on.collect(),
            priority: raw.priority.as_ref().map_or(0, |p| p.value),
            replicas,
            era: first(raw.era.as_ref(), defaults.era.as_ref()).map_or(Era::Auto, |e| e.value),
            on_failure: first(raw.on_failure.as_ref(), defaults.on_failure.as_ref())
                .map_or(OnFailure::Rollback, |e| e.value),
            restart: self.restart(raw.restart.get(), defaults.restart.get()),
            health: self.health(raw.health.get(), defaults.health.get(), t, scope),
            rollout: self.rollout(raw.rollout.get(), defaults.rollout.get(), replicas),
            description: raw.description.clone(),
            autoscale: raw.autoscale.get().and_then(|a| self.autoscale(a)),
            kubernetes: self.server_kubernetes(raw.kubernetes.get()),
        }
    }

    fn isolation(&mut self, raw: &RawStdio) -> Isolation {
        let mode = raw
            .isolation
            .as_ref()
            .map_or_else(IsolationMode::default, |m| m.value);
        if mode == IsolationMode::Shared {
            let pool_keys = [
                ("warm", raw.warm.as_ref().map(|v| v.span)),
                ("max_sessions", raw.max_sessions.as_ref().map(|v| v.span)),
                ("idle_timeout", raw.idle_timeout.as_ref().map(|v| v.span)),
            ];
            for (key, span) in pool_keys {
                if let Some(span) = span {
                    self.error(
                        format!("`{key}` only applies to `isolation: per-session`"),
                        span,
                    )
                    .help = Some(
                        "a shared server runs `replicas` processes that every session uses".into(),
                    );
                }
            }
            return Isolation::Shared;
        }
        let max_sessions = match &raw.max_sessions {
            Some(m) if m.value == 0 => {
                self.error("`max_sessions` must be at least 1", m.span).help = Some(
                    "it caps the client sessions (one process each) served at once; 0 would refuse every session"
                        .into(),
                );
                Isolation::DEFAULT_MAX_SESSIONS
            }
            Some(m) => m.value,
            None => Isolation::DEFAULT_MAX_SESSIONS,
        };
        let warm = raw
            .warm
            .as_ref()
            .map_or(Isolation::DEFAULT_WARM, |w| w.value);
        if let Some(w) = raw.warm.as_ref().filter(|_| warm > max_sessions) {
            self.error(
                format!("`warm` ({warm}) is more than `max_sessions` ({max_sessions})"),
                w.span,
            )
            .help = Some(
                "processes beyond `max_sessions` could never serve a session; lower `warm` or raise `max_sessions`"
                    .into(),
            );
        }
        let idle_timeout = match &raw.idle_timeout {
            Some(t) if parse_duration(&t.value.0).is_ok_and(|d| d.is_zero()) => {
                self.error("`idle_timeout` must be longer than zero", t.span)
                    .help = Some(format!(
                    "a session would end as soon as it went quiet; leave the key out for the default `{}`",
                    format_duration(Isolation::DEFAULT_IDLE_TIMEOUT)
                ));
                Isolation::DEFAULT_IDLE_TIMEOUT
            }
            t => self.duration(t.as_ref(), Isolation::DEFAULT_IDLE_TIMEOUT),
        };
        Isolation::PerSession {
            warm: warm.min(max_sessions),
            max_sessions,
            idle_timeout,
        }
    }

    fn check_url(&mut self, url: &Text, span: Span, used_for: UrlUse) {
        if url.shown.contains("***") {
            return; // the URL carries a secret; it is checked when it is rendered for real.
        }
        match url::Url::parse(&url.shown) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                self.error(
                    format!("URL scheme `{}` is not supported", u.scheme()),
                    span,
                )
                .help = Some(used_for.scheme_help().into());
            }
            Ok(u) if u.host().is_none() => {
                self.error("the URL has no host", span);
            }
            Ok(u) => {
                let local = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if u.scheme() == "http" && !local {
                    self.warning(used_for.plain_http_warning(), span).help =
                        Some("use https://".into());
                }
            }
            Err(e) => {
                self.error(format!("invalid URL: {e}"), span).help = Some(format!(
                    "write the full endpoint, e.g. `{}`",
                    used_for.example()
                ));
            }
        }
    }

    fn restart(&mut self, raw: Option<&RawRestart>, defaults: Option<&RawRestart>) -> Restart {
        let (b, db) = (
            raw.and_then(|r| r.backoff.as_ref()),
            defaults.and_then(|r| r.backoff.as_ref()),
        );
        let initial = self.duration(
            first(
                b.and_then(|b| b.initial.as_ref()),
                db.and_then(|b| b.initial.as_ref()),
            ),
            Duration::from_millis(200),
        );
        let max = self.duration(
            first(
                b.and_then(|b| b.max.as_ref()),
                db.and_then(|b| b.max.as_ref()),
            ),
            Duration::from_secs(30),
        );
        if max < initial
            && let Some(m) = first(
                b.and_then(|b| b.max.as_ref()),
                db.and_then(|b| b.max.as_ref()),
            )
        {
            self.error("`backoff.max` is shorter than `backoff.initial`", m.span);
        }
        let multiplier = first(
            b.and_then(|b| b.multiplier.as_ref()),
            db.and_then(|b| b.multiplier.as_ref()),
        );
        if let Some(m) = multiplier.filter(|m| !(1.0..=10.0).contains(&m.value)) {
            self.error("`multiplier` must be between 1 and 10", m.span);
        }
        let jitter = first(
            b.and_then(|b| b.jitter.as_ref()),
            db.and_then(|b| b.jitter.as_ref()),
        );
        if let Some(j) = jitter.filter(|j| !(0.0..=1.0).contains(&j.value)) {
            self.error("`jitter` is a fraction from 0 to 1", j.span);
        }
        let pick = |f: fn(&RawRestart) -> Option<&Spanned<u32>>| {
            first(raw.and_then(f), defaults.and_then(f))
        };
        Restart {
            policy: first(
                raw.and_then(|r| r.policy.as_ref()),
                defaults.and_then(|r| r.policy.as_ref()),
            )
            .map_or(RestartPolicyKind::OnFailure, |p| p.value),
            backoff_initial: initial,
            backoff_max: max.max(initial),
            backoff_multiplier: multiplier.map_or(2.0, |m| m.value),
            jitter: jitter.map_or(0.2, |j| j.value),
            give_up_after: self.count(pick(|r| r.give_up_after.as_ref()), 10, 1, "give_up_after"),
            stable_after: self.duration(
                first(
                    raw.and_then(|r| r.stable_after.as_ref()),
                    defaults.and_then(|r| r.stable_after.as_ref()),
                ),
                Duration::from_secs(60),
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn cadence(
        &mut self,
        interval: Option<&Spanned<DurationText>>,
        timeout: Option<&Spanned<DurationText>>,
        failure: Option<&Spanned<u32>>,
        success: Option<&Spanned<u32>>,
        default_timeout: Duration,
    ) -> Cadence {
        let interval = self.duration(interval, Duration::from_secs(10));
        let timeout_value = self.duration(timeout, default_timeout);
        if let Some(t) = timeout.filter(|_| timeout_value > interval) {
            self.warning("the timeout is longer than the check interval", t.span)
                .help = Some("checks will overlap; raise `interval` or lower the timeout".into());
        }
        Cadence {
            interval,
            timeout: timeout_value,
            failure_threshold: self.count(failure, 3, 1, "failure_threshold"),
            success_threshold: self.count(success, 1, 1, "success_threshold"),
        }
    }

    fn health(
        &mut self,
        raw: Option<&RawHealth>,
        defaults: Option<&RawHealth>,
        t: &Templates,
        scope: Scope<'_>,
    ) -> Health {
        let mcp = raw.and_then(|h| h.mcp.get());
        let dmcp = defaults.and_then(|h| h.mcp.get());
        macro_rules! pick {
            ($a:expr, $b:expr, $f:ident) => {
                first(
                    $a.and_then(|c| c.$f.as_ref()),
                    $b.and_then(|c| c.$f.as_ref()),
                )
            };
        }
        let cadence = self.cadence(
            pick!(mcp, dmcp, interval),
            pick!(mcp, dmcp, handshake_timeout),
            pick!(mcp, dmcp, failure_threshold),
            pick!(mcp, dmcp, success_threshold),
            Duration::from_secs(5),
        );
        let mut expect_tools = Vec::new();
        for tool in pick!(mcp, dmcp, expect_tools).into_iter().flatten() {
            if tool.value.trim().is_empty() {
                self.error("empty tool name in `expect_tools`", tool.span);
            } else if expect_tools.contains(&tool.value) {
                self.warning(format!("tool `{}` is listed twice", tool.value), tool.span);
            } else {
                expect_tools.push(tool.value.clone());
            }
        }
        let call = pick!(mcp, dmcp, call).map(|c| {
            let call = &c.value;
            if call.tool.value.trim().is_empty() {
                self.error("the smoke call names no tool", call.tool.span);
            }
            let arguments = call
                .arguments
                .clone()
                .unwrap_or_else(|| serde_json::json!({}));
            if !arguments.is_object() {
                self.error(
                    "`arguments` must be a mapping of argument names to values",
                    c.span,
                );
            }
            SmokeCall {
                tool: call.tool.value.clone(),
                arguments,
                expect_contains: call.expect.as_ref().and_then(|e| e.contains.clone()),
                expect_error: call
                    .expect
                    .as_ref()
                    .and_then(|e| e.is_error)
                    .unwrap_or(false),
            }
        });
        let max_latency =
            pick!(mcp, dmcp, max_latency).map(|m| self.duration(Some(m), Duration::from_secs(1)));
        let mcp = McpCheck {
            cadence,
            expect_tools,
            call,
            max_latency,
        };

        let mut others = Vec::new();
        let http = raw.and_then(|h| h.http.get());
        let dhttp = defaults.and_then(|h| h.http.get());
        if let Some(c) = http.or(dhttp) {
            let cadence = self.cadence(
                pick!(http, dhttp, interval),
                pick!(http, dhttp, timeout),
                pick!(http, dhttp, failure_threshold),
                pick!(http, dhttp, success_threshold),
                Duration::from_secs(2),
            );
            let target = match (&c.path, &c.url) {
                (Some(p), None) if p.value.starts_with('/') => p.value.clone(),
                (Some(p), None) => {
                    self.error("`path` must start with `/`", p.span);
                    p.value.clone()
                }
                (None, Some(u)) => {
                    let text = self.render(t, u, scope);
                    self.check_url(&text, u.span, UrlUse::Server);
                    text.shown
                }
                (Some(_), Some(u)) => {
                    self.error("set `path` or `url`, not both", u.span);
                    u.value.clone()
                }
                (None, None) => "/".to_string(),
            };
            if let Some(s) = c
                .expect_status
                .as_ref()
                .filter(|s| !(100..=599).contains(&s.value))
            {
                self.error("`expect_status` must be an HTTP status (100–599)", s.span);
            }
            others.push(Check {
                cadence,
                probe: CheckProbe::Http {
                    target,
                    expect_status: c.expect_status.as_ref().map(|s| s.value),
                },
            });
        }
        let tcp = raw.and_then(|h| h.tcp.get());
        let dtcp = defaults.and_then(|h| h.tcp.get());
        if let Some(c) = tcp.or(dtcp) {
            let cadence = self.cadence(
                pick!(tcp, dtcp, interval),
                pick!(tcp, dtcp, timeout),
                pick!(tcp, dtcp, failure_threshold),
                pick!(tcp, dtcp, success_threshold),
                Duration::from_secs(2),
            );
            if let Some(a) = c.address.as_ref().filter(|a| {
                a.value
                    .rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            }) {
                self.error(format!("`{}` is not a HOST:PORT address", a.value), a.span);
            }
            if c.address.is_none() && !scope.port {
                self.error(
                    "a tcp check without `address` needs an http server's port",
                    cadence_span(tcp.or(dtcp)),
                )
                .help = Some("give `address: HOST:PORT`".into());
            }
            others.push(Check {
                cadence,
                probe: CheckProbe::Tcp {
                    address: c.address.as_ref().map(|a| a.value.clone()),
                },
            });
        }
        let cmd = raw.and_then(|h| h.command.get());
        let dcmd = defaults.and_then(|h| h.command.get());
        if let Some(c) = cmd.or(dcmd) {
            let cadence = self.cadence(
                pick!(cmd, dcmd, interval),
                pick!(cmd, dcmd, timeout),
                pick!(cmd, dcmd, failure_threshold),
                pick!(cmd, dcmd, success_threshold),
                Duration::from_secs(5),
            );
            let command = self.render(t, &c.command, scope);
            if command.shown.trim().is_empty() {
                self.error("the check command is empty", c.command.span);
            }
            let args = c.args.iter().map(|a| self.render(t, a, scope)).collect();
            others.push(Check {
                cadence,
                probe: CheckProbe::Command { command, args },
            });
        }
        let file = raw.and_then(|h| h.file.get());
        let dfile = defaults.and_then(|h| h.file.get());
        if let Some(c) = file.or(dfile) {
            let cadence = self.cadence(
                pick!(file, dfile, interval),
                None,
                pick!(file, dfile, failure_threshold),
                pick!(file, dfile, success_threshold),
                Duration::from_secs(1),
            );
            let path = self.render(t, &c.path, scope);
            if path.shown.trim().is_empty() {
                self.error("the file check names no path", c.path.span);
            }
            others.push(Check {
                cadence,
                probe: CheckProbe::File { path },
            });
        }
        Health { mcp, others }
    }

    fn rollout(
        &mut self,
        raw: Option<&RawRollout>,
        defaults: Option<&RawRollout>,
        replicas: u32,
    ) -> Rollout {
        macro_rules! pick {
            ($f:ident) => {
                first(
                    raw.and_then(|r| r.$f.as_ref()),
                    defaults.and_then(|r| r.$f.as_ref()),
                )
            };
        }
        let strategy = pick!(strategy).map_or(Strategy::Rolling, |s| s.value);
        let max_surge = pick!(max_surge).map_or(1, |v| v.value);
        let max_unavailable = pick!(max_unavailable).map_or(0, |v| v.value);
        if strategy == Strategy::Rolling && max_surge == 0 && max_unavailable == 0 {
            let span = pick!(max_surge)
                .or(pick!(max_unavailable))
                .map_or(Span::point(1, 1), |s| s.span);
            self.error(
                "a rolling update needs `max_surge` or `max_unavailable` above 0",
                span,
            )
            .help = Some("with both at 0 no instance could ever be replaced".into());
        }
        if let Some(u) = pick!(max_unavailable).filter(|u| u.value > replicas) {
            self.warning(
                format!(
                    "`max_unavailable` ({}) is more than the {replicas} replica(s)",
                    u.value
                ),
                u.span,
            );
        }
        let rollback_window = self.duration(pick!(rollback_window), Duration::from_secs(300));
        let mut steps = Vec::new();
        if let Some(raw_steps) = pick!(steps) {
            let span = raw_steps.first().map_or(Span::point(1, 1), |s| s.span);
            if strategy != Strategy::Canary {
                self.error(
                    format!(
                        "`steps` only apply to the canary strategy, but this server uses `{}`",
                        strategy_name(strategy)
                    ),
                    span,
                )
                .help = Some("set `strategy: canary`, or remove `steps`".into());
            }
            let mut last = 0;
            for step in raw_steps {
                let w = &step.value.weight;
                if !(1..=100).contains(&w.value) {
                    self.error("a canary weight is a percentage from 1 to 100", w.span);
                } else if w.value <= last {
                    self.error(
                        format!("canary weights must increase: {} follows {last}", w.value),
                        w.span,
                    );
                }
                last = last.max(w.value);
                let pause = match &step.value.pause {
                    None => Some(Duration::ZERO),
                    Some(Spanned {
                        value: RawPause::UntilPromoted,
                        ..
                    }) => None,
                    Some(Spanned {
                        value: RawPause::For(text),
                        span,
                    }) => Some(self.duration(
                        Some(&Spanned::new(text.clone(), *span)),
                        Duration::from_secs(60),
                    )),
                };
                steps.push(CanaryStep {
                    weight: w.value,
                    pause,
                });
            }
        } else if strategy == Strategy::Canary {
            let span = pick!(strategy).map_or(Span::point(1, 1), |s| s.span);
            self.error("the canary strategy needs `steps`", span).help =
                Some("e.g. `steps: [{ weight: 10, pause: 2m }, { weight: 50, pause: 5m }]`".into());
        }
        let a = raw.and_then(|r| r.analysis.get());
        let da = defaults.and_then(|r| r.analysis.get());
        macro_rules! apick {
            ($f:ident) => {
                first(
                    a.and_then(|r| r.$f.as_ref()),
                    da.and_then(|r| r.$f.as_ref()),
                )
            };
        }
        let max_error_rate = apick!(max_error_rate);
        if let Some(r) = max_error_rate.filter(|r| !(0.0..=1.0).contains(&r.value)) {
            self.error(
                "`max_error_rate` is a fraction from 0 to 1 (0.05 = 5 %)",
                r.span,
            );
        }
        let ratio = apick!(max_latency_p95_ratio);
        if let Some(r) = ratio.filter(|r| r.value <= 0.0 || r.value.is_nan()) {
            self.error(
                "`max_latency_p95_ratio` must be above 0 (1.25 = 25 % slower than stable)",
                r.span,
            );
        }
        let analysis = Analysis {
            interval: self.duration(apick!(interval), Duration::from_secs(10)),
            max_error_rate: max_error_rate.map_or(0.05, |r| r.value),
            max_latency_p95_ratio: ratio.map_or(1.25, |r| r.value),
            min_requests: apick!(min_requests).map_or(20, |v| v.value),
            failure_limit: self.count(apick!(failure_limit), 2, 1, "failure_limit"),
            count_tool_errors: a
                .and_then(|a| a.count_tool_errors)
                .or(da.and_then(|a| a.count_tool_errors))
                .unwrap_or(false),
        };
        Rollout {
            strategy,
            max_surge,
            max_unavailable,
            rollback_window,
            steps,
            analysis,
            on_abort: pick!(on_abort).map_or(OnAbort::EndSessions, |v| v.value),
        }
    }

    fn check_dependencies(&mut self, servers: &mut [Server], raw: &Named<Recover<RawServer>>) {
        let names: Vec<&str> = raw.0.iter().map(|(n, _)| n.value.as_str()).collect();
        let known: std::collections::HashSet<&str> = names.iter().copied().collect();
        for server in servers.iter_mut() {
            let mut seen = BTreeSet::new();
            let mut kept = Vec::new();
            for dep in std::mem::take(&mut server.depends_on) {
                if dep.server == server.name {
                    self.error(
                        format!("server `{}` depends on itself", server.name),
                        dep.span,
                    );
                } else if !known.contains(dep.server.as_str()) {
                    let d = self.error(
                        format!(
                            "`{}` depends on unknown server `{}`",
                            server.name, dep.server
                        ),
                        dep.span,
                    );
                    match did_you_mean(&dep.server, names.iter().copied()) {
                        Some(m) => d.label = Some(format!("did you mean `{m}`?")),
                        None => {
                            d.help = Some(format!("servers in this fleet: {}", names.join(", ")))
                        }
                    }
                } else if !seen.insert(dep.server.clone()) {
                    self.warning(format!("`{}` is listed twice", dep.server), dep.span);
                } else {
                    kept.push(dep);
                }
            }
            server.depends_on = kept;
        }
    }
}

/// The keys `stdio:` and `http:` share: what runs, with which arguments and environment.
struct CommandKeys<'a> {
    /// `stdio` or `http`.
    kind: &'static str,
    /// The whole block, for what is missing from it.
    block: Span,
    command: Option<&'a Spanned<String>>,
    image: Option<&'a Spanned<String>>,
    args: &'a [Spanned<String>],
    env: &'a Named<Spanned<String>>,
    cwd: Option<&'a Spanned<String>>,
}

/// What [`is_engine_name`] accepts, as help for a refused network or volume name.
const ENGINE_NAME_RULE: &str = "letters, digits, `_`, `.` and `-`, starting with a letter or digit";

/// Whether the container engine accepts `name` as a network or volume name.
/// What a URL of the fleet file is for, which decides what its diagnostics say.
#[derive(Debug, Clone, Copy)]
enum UrlUse {
    /// A remote server's endpoint or an http check's.
    Server,
    /// Where webhooks are POSTed.
    Webhook,
    /// The OpenTelemetry collector spans are exported to.
    Collector,
}

impl UrlUse {
    fn scheme_help(self) -> &'static str {
        match self {
            UrlUse::Server => {
                "remote servers speak Streamable HTTP: use an http:// or https:// URL"
            }
            UrlUse::Webhook => "webhooks are POSTed over HTTP: use an https:// URL",
            UrlUse::Collector => {
                "spans are exported over OTLP/HTTP: use the collector's http:// or https:// URL (gRPC is not supported)"
            }
        }
    }

    fn plain_http_warning(self) -> &'static str {
        match self {
            UrlUse::Server => "plain http:// to a remote host sends credentials unencrypted",
            UrlUse::Webhook => {
                "plain http:// to a remote host sends the fleet's events unencrypted: anyone on the way can read them, and replay one while its timestamp is fresh"
            }
            UrlUse::Collector => {
                "plain http:// to a remote host sends spans (server, tool and method names) and the export headers unencrypted"
            }
        }
    }

    fn example(self) -> &'static str {
        match self {
            UrlUse::Server => "https://mcp.example.com/mcp",
            UrlUse::Webhook => "https://hooks.example.com/mcpfleet",
            UrlUse::Collector => "http://collector:4318",
        }
    }
}

fn is_engine_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `path` without `.` and `..` components (lexically: a volume's source may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Parses a memory size: bytes (`268435456`), or a number and a unit, `Ki`/`Mi`/`Gi`/`Ti`
/// (powers of 1024) or `K`/`M`/`G`/`T` (powers of 1000); fractions only with a unit.
fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let factor: u64 = match unit {
        "" => 1,
        "K" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => return Err(format!("`{other}` is not a unit of memory")),
    };
    let bytes = if unit.is_empty() {
        number
            .parse::<u64>()
            .map_err(|_| format!("`{text}` is not a whole number of bytes"))?
    } else {
        let n: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a memory size"))?;
        let bytes = (n * factor as f64).floor();
        if bytes >= u64::MAX as f64 {
            return Err(format!("`{text}` is too large"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bytes = bytes as u64;
        bytes
    };
    if bytes == 0 {
        return Err("the size must be above zero".into());
    }
    Ok(bytes)
}

fn cadence_span(check: Option<&RawTcpCheck>) -> Span {
    check
        .and_then(|c| c.interval.as_ref().map(|i| i.span))
        .unwrap_or(Span::point(1, 1))
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Recreate => "recreate",
        Strategy::Rolling => "rolling",
        Strategy::BlueGreen => "blue-green",
        Strategy::Canary => "canary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_binary_and_decimal_units_and_plain_bytes() {
        for (text, bytes) in [
            ("256Mi", 256 << 20),
            ("1Gi", 1 << 30),
            ("512M", 512_000_000),
            ("1G", 1_000_000_000),
            ("1.5Gi", 3 << 29),
            ("268435456", 268_435_456),
        ] {
            assert_eq!(parse_memory(text), Ok(bytes), "{text}");
        }
        for (text, error) in [
            ("256MB", "not a unit"),
            ("1.5", "whole number"),
            ("0Mi", "above zero"),
            ("Mi", "not a memory size"),
            ("99999999999Ti", "too large"),
        ] {
            let e = parse_memory(text).unwrap_err();
            assert!(e.contains(error), "{text}: {e}");
        }
    }

    #[test]
    fn volume_paths_are_normalized_lexically() {
        assert_eq!(
            normalize(Path::new("/srv/fleet/./data/../cache")),
            Path::new("/srv/fleet/cache")
        );
        assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
    }
}
