//! Templates in fleet-file strings (minijinja, Jinja2 syntax).
//!
//! Available: `env('NAME', default?)`, `secret('name')`, `var('name')`, `port` (http servers
//! only), `random_string(n)`, `now()`, `base64(text)` (also a filter), `server.name`,
//! `revision`.
//!
//! Two modes ([`Mode`]). *Plan* (validate, plan, everything shown to people): secrets are
//! shown as `***` and never read, and values that only exist once an instance starts
//! (`port`, `revision`, `random_string`, `now`) become placeholders such as `<port>`.
//! *Instance* (starting a process): everything is real, secrets included; the result goes
//! to the process and nowhere else.

use crate::diag::did_you_mean;
use crate::model::{SecretRef, Text, ValidFleet};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value, context};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What the templates may read from the machine. Tests replace it.
pub trait Host: Send + Sync {
    /// The value of an environment variable, if set.
    fn env_var(&self, name: &str) -> Option<String>;
    /// Whether a file exists (secret files are checked, never read, while planning).
    fn file_exists(&self, path: &Path) -> bool;
    /// Reads a secret file when an instance starts.
    ///
    /// # Errors
    /// The file cannot be read.
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// The real machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn env_var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file_exists(&self, path: &Path) -> bool {
        path.is_file()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// What the per-instance functions produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Validate and plan: secrets are never read, per-instance values are placeholders.
    Plan,
    /// Start an instance: real values, secrets included.
    Instance { port: Option<u16>, revision: u64 },
}

/// Where a string sits, which decides what it may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub server: Option<&'a str>,
    /// Only `http` servers get an allocated port.
    pub port: bool,
}

impl Scope<'_> {
    pub(crate) const FLEET: Scope<'static> = Scope {
        server: None,
        port: false,
    };
}

/// A template problem: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub message: String,
    pub help: Option<String>,
}

const FUNCTIONS: &[&str] = &["env", "secret", "var", "random_string", "now", "base64"];
const VARIABLES: &[&str] = &["port", "server", "revision"];

pub(crate) struct Templates {
    env: Environment<'static>,
    mode: Mode,
    used_secrets: Arc<Mutex<BTreeSet<String>>>,
}

impl Templates {
    /// `secrets` maps every declared name to its source (`None` where the source is broken;
    /// the name still counts as declared so its uses do not cascade into more errors).
    pub(crate) fn new(
        host: Arc<dyn Host>,
        vars: BTreeMap<String, String>,
        secrets: BTreeMap<String, Option<SecretRef>>,
        mode: Mode,
    ) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(50_000));
        env.set_recursion_limit(32);
        let env_host = host.clone();
        env.add_function("env", move |name: String, default: Option<String>| {
            env_host
                .env_var(&name)
                .or(default)
                .ok_or_else(|| op_error(format!("environment variable `{name}` is not set")))
        });
        let used_secrets = Arc::new(Mutex::new(BTreeSet::new()));
        let used = used_secrets.clone();
        env.add_function("secret", move |name: String| {
            let Some(source) = secrets.get(&name) else {
                let hint = did_you_mean(&name, secrets.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(op_error(format!("unknown secret `{name}`{hint}")));
            };
            used.lock()
                .map_err(|_| op_error("internal lock poisoned".into()))?
                .insert(name.clone());
            match (mode, source) {
                (Mode::Plan, _) => Ok("***".to_string()),
                (Mode::Instance { .. }, Some(source)) => read_secret(host.as_ref(), &name, source),
                (Mode::Instance { .. }, None) => {
                    Err(op_error(format!("secret `{name}` has no valid source")))
                }
            }
        });
        env.add_function("var", move |name: String| {
            vars.get(&name).cloned().ok_or_else(|| {
                let hint = did_you_mean(&name, vars.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                op_error(format!("unknown var `{name}`{hint}"))
            })
        });
        env.add_function("random_string", move |n: u32| {
            if !(1..=256).contains(&n) {
                return Err(op_error(format!(
                    "random_string({n}): the length must be 1 to 256"
                )));
            }
            match mode {
                Mode::Plan => Ok(format!("<random_string({n})>")),
                Mode::Instance { .. } => random_string(n as usize),
            }
        });
        env.add_function("now", move || match mode {
            Mode::Plan => "<now>".to_string(),
            Mode::Instance { .. } => rfc3339(std::time::SystemTime::now()),
        });
        env.add_function("base64", |text: String| base64(text.as_bytes()));
        env.add_filter("base64", |text: String| base64(text.as_bytes()));
        Templates {
            env,
            mode,
            used_secrets,
        }
    }

    /// Renders a string. Strings without template syntax are returned as is.
    pub(crate) fn render(&self, source: &str, scope: Scope<'_>) -> Result<String, TemplateError> {
        if !(source.contains("{{") || source.contains("{%") || source.contains("{#")) {
            return Ok(source.to_string());
        }
        let template = self
            .env
            .template_from_str(source)
            .map_err(|e| TemplateError {
                message: format!("invalid template: {}", detail(&e)),
                help: Some(
                    "templates use Jinja syntax: `{{ env('NAME') }}`, `{{ secret('name') }}`"
                        .into(),
                ),
            })?;
        for name in template.undeclared_variables(false) {
            if FUNCTIONS.contains(&name.as_str()) || self.env.globals().any(|(g, _)| g == name) {
                continue;
            }
            if name == "port" && !scope.port {
                return Err(TemplateError {
                    message: "`port` is only allocated for `http` servers".into(),
                    help: Some(
                        "stdio servers talk over stdin/stdout; remote servers have a URL".into(),
                    ),
                });
            }
            if name == "server" && scope.server.is_none() {
                return Err(TemplateError {
                    message: "`server` is only defined inside a server".into(),
                    help: None,
                });
            }
            if !VARIABLES.contains(&name.as_str()) {
                let hint = did_you_mean(&name, VARIABLES.iter().chain(FUNCTIONS).copied());
                return Err(TemplateError {
                    message: format!("unknown template variable `{name}`"),
                    help: Some(match hint {
                        Some(h) => format!(
                            "did you mean `{h}`? Values from `vars:` are read with var('{name}')"
                        ),
                        None => format!(
                            "values from `vars:` are read with var('{name}'); environment variables with env('NAME')"
                        ),
                    }),
                });
            }
        }
        let (port, revision) = match self.mode {
            Mode::Plan => (Value::from("<port>"), Value::from("<revision>")),
            Mode::Instance { port, revision } => (
                port.map_or(Value::UNDEFINED, Value::from),
                Value::from(revision),
            ),
        };
        let ctx = context! {
            port => port,
            revision => revision,
            server => context! { name => scope.server.unwrap_or_default() },
        };
        template.render(ctx).map_err(|e| TemplateError {
            message: detail(&e),
            help: help_for(&e),
        })
    }

    /// What `render` returns, and the names of the secrets the templates it renders refer
    /// to (those alone: what was rendered before still counts as used).
    pub(crate) fn noting_secrets<T>(&self, render: impl FnOnce() -> T) -> (T, BTreeSet<String>) {
        let take = || {
            self.used_secrets
                .lock()
                .map(|mut used| std::mem::take(&mut *used))
                .unwrap_or_default()
        };
        let before = take();
        let result = render();
        let noted = take();
        if let Ok(mut used) = self.used_secrets.lock() {
            used.extend(before);
            used.extend(noted.iter().cloned());
        }
        (result, noted)
    }

    /// Names of the secrets the rendered templates referred to.
    pub(crate) fn used_secrets(&self) -> BTreeSet<String> {
        self.used_secrets
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// Templates for starting the instances of one server revision: real values, secrets
/// included. What they render goes to the process and nowhere else.
pub struct InstanceTemplates {
    templates: Templates,
}

impl std::fmt::Debug for InstanceTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceTemplates")
            .field("mode", &self.templates.mode)
            .finish_non_exhaustive()
    }
}

/// A template could not be rendered for an instance (an unset variable, an unreadable secret
/// file). The message never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub message: String,
}

impl InstanceTemplates {
    /// Prepares rendering for one instance: `port` is its allocated port (http servers).
    ///
    /// # Errors
    /// A `vars` value cannot be rendered here (e.g. its environment variable is unset).
    pub fn new(
        fleet: &ValidFleet,
        host: Arc<dyn Host>,
        port: Option<u16>,
        revision: u64,
    ) -> Result<Self, RenderError> {
        let mode = Mode::Instance { port, revision };
        let secrets: BTreeMap<String, Option<SecretRef>> = fleet
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let bootstrap = Templates::new(host.clone(), BTreeMap::new(), secrets.clone(), mode);
        let mut vars = BTreeMap::new();
        for (name, text) in &fleet.vars {
            let value = bootstrap
                .render(&text.template, Scope::FLEET)
                .map_err(|e| RenderError {
                    message: format!("var `{name}`: {}", e.message),
                })?;
            vars.insert(name.clone(), value);
        }
        Ok(InstanceTemplates {
            templates: Templates::new(host, vars, secrets, mode),
        })
    }

    /// Renders one of a server's strings.
    ///
    /// # Errors
    /// The template fails with real values (unset variable, unreadable secret).
    pub fn render(&self, text: &Text, server: &str) -> Result<String, RenderError> {
        let port = matches!(self.templates.mode, Mode::Instance { port: Some(_), .. });
        self.templates
            .render(
                &text.template,
                Scope {
                    server: Some(server),
                    port,
                },
            )
            .map_err(|e| RenderError { message: e.message })
    }

    /// Renders one of the fleet's own strings (a webhook's URL or secret), outside any
    /// server.
    ///
    /// # Errors
    /// The template fails with real values (unset variable, unreadable secret).
    pub fn render_fleet(&self, text: &Text) -> Result<String, RenderError> {
        self.templates
            .render(&text.template, Scope::FLEET)
            .map_err(|e| RenderError { message: e.message })
    }
}

fn read_secret(
    host: &dyn Host,
    name: &str,
    source: &SecretRef,
) -> Result<String, minijinja::Error> {
    match source {
        SecretRef::Env(var) => host.env_var(var).ok_or_else(|| {
            op_error(format!(
                "secret `{name}`: environment variable `{var}` is not set"
            ))
        }),
        SecretRef::File(path) => host
            .read_file(path)
            .map(|v| {
                v.strip_suffix('\n')
                    .map(|v| v.strip_suffix('\r').unwrap_or(v))
                    .unwrap_or(&v)
                    .to_string()
            })
            .map_err(|e| {
                op_error(format!(
                    "secret `{name}`: cannot read {}: {e}",
                    path.display()
                ))
            }),
    }
}

/// Letters and digits from the operating system's random source.
fn random_string(n: usize) -> Result<String, minijinja::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| op_error(format!("no random source: {e}")))?;
        // Rejection sampling keeps every character equally likely.
        for b in buf.iter().filter(|b| usize::from(**b) < 248) {
            if out.len() < n {
                out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// `2026-11-22T03:04:05.123Z` (UTC, milliseconds): how mcpfleet writes every time it
/// records or shows.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn op_error(message: String) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message)
}

fn detail(e: &minijinja::Error) -> String {
    e.detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string())
}

fn help_for(e: &minijinja::Error) -> Option<String> {
    let d = e.detail().unwrap_or_default();
    if d.starts_with("environment variable") {
        Some("set it before running mcpfleet, or give a default: env('NAME', 'fallback')".into())
    } else if d.starts_with("unknown secret") {
        Some("declare it under `secrets:` with `env:` or `file:`".into())
    } else if d.starts_with("unknown var") {
        Some("declare it under `vars:`".into())
    } else {
        None
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHost;
    impl Host for NoHost {
        fn env_var(&self, name: &str) -> Option<String> {
            match name {
                "HOME" => Some("/home/me".to_string()),
                "TOKEN" => Some("s3cr3t".to_string()),
                _ => None,
            }
        }
        fn file_exists(&self, _: &Path) -> bool {
            false
        }
        fn read_file(&self, _: &Path) -> std::io::Result<String> {
            Ok("from-file\n".to_string())
        }
    }

    fn templates_in(mode: Mode) -> Templates {
        let vars = BTreeMap::from([("level".to_string(), "debug".to_string())]);
        let secrets = BTreeMap::from([
            ("token".to_string(), Some(SecretRef::Env("TOKEN".into()))),
            ("key".to_string(), Some(SecretRef::File("/k".into()))),
        ]);
        Templates::new(Arc::new(NoHost), vars, secrets, mode)
    }

    fn templates() -> Templates {
        templates_in(Mode::Plan)
    }

    #[test]
    fn instance_mode_renders_real_values() {
        let t = templates_in(Mode::Instance {
            port: Some(4321),
            revision: 7,
        });
        let scope = Scope {
            server: Some("web"),
            port: true,
        };
        let out = t.render(
            "{{ port }} {{ revision }} {{ secret('token') }} {{ secret('key') }}",
            scope,
        );
        assert_eq!(out.unwrap(), "4321 7 s3cr3t from-file");
        let random = t.render("{{ random_string(32) }}", scope).unwrap();
        assert_eq!(random.len(), 32);
        assert!(random.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(random, t.render("{{ random_string(32) }}", scope).unwrap());
    }

    #[test]
    fn rfc3339_formats_civil_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_316_645);
        assert_eq!(rfc3339(t), "2026-11-22T03:04:05.000Z");
        assert_eq!(
            rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(7)),
            "1970-01-01T00:00:00.007Z"
        );
    }

    #[test]
    fn renders_functions_and_masks_secrets() {
        let t = templates();
        let scope = Scope {
            server: Some("web"),
            port: true,
        };
        let out = t.render("{{ server.name }} {{ var('level') }} {{ env('HOME') }} {{ secret('token') }} {{ port }}", scope);
        assert_eq!(out.unwrap(), "web debug /home/me *** <port>");
        assert_eq!(t.used_secrets(), BTreeSet::from(["token".to_string()]));
        assert_eq!(t.render("{{ 'hi' | base64 }}", scope).unwrap(), "aGk=");
    }

    #[test]
    fn the_secrets_of_one_string_are_told_apart_and_every_use_still_counts() {
        let t = templates();
        let scope = Scope::FLEET;
        t.render("{{ secret('token') }}", scope).unwrap();
        // A secret used only before is not this string's.
        let (shown, secrets) = t.noting_secrets(|| t.render("{{ secret('key') }}", scope));
        assert_eq!(shown.unwrap(), "***");
        assert_eq!(secrets, BTreeSet::from(["key".into()]));
        // One used before is, when this string uses it too.
        let (_, secrets) = t.noting_secrets(|| t.render("a{{ secret('token') }}", scope));
        assert_eq!(secrets, BTreeSet::from(["token".into()]));
        let (_, none) = t.noting_secrets(|| t.render("plain", scope));
        assert_eq!(none, BTreeSet::new());
        // And every use still counts for "declared but never used".
        assert_eq!(
            t.used_secrets(),
            BTreeSet::from(["key".into(), "token".into()])
        );
    }

    #[test]
    fn explains_what_is_missing() {
        let t = templates();
        let scope = Scope {
            server: Some("web"),
            port: false,
        };
        assert_eq!(
            t.render("{{ env('NOPE') }}", scope).unwrap_err().message,
            "environment variable `NOPE` is not set"
        );
        assert!(
            t.render("{{ secret('tokn') }}", scope)
                .unwrap_err()
                .message
                .contains("did you mean `token`")
        );
        assert!(
            t.render("{{ port }}", scope)
                .unwrap_err()
                .message
                .contains("only allocated for `http`")
        );
        assert!(
            t.render("{{ prot }}", scope)
                .unwrap_err()
                .help
                .unwrap()
                .contains("did you mean `port`")
        );
        assert!(
            t.render("{{ oops", scope)
                .unwrap_err()
                .message
                .starts_with("invalid template")
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
