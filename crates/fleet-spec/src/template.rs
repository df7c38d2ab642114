//! Templates in fleet-file strings (minijinja, Jinja2 syntax).
//!
//! Available: `env('NAME', default?)`, `secret('name')`, `var('name')`, `port` (http servers
//! only), `random_string(n)`, `now()`, `base64(text)` (also a filter), `server.name`,
//! `revision`.
//!
//! This module renders for *planning*: secrets are shown as `***` and never read, and values
//! that only exist once an instance starts (`port`, `revision`, `random_string`, `now`)
//! become placeholders such as `<port>`. The runtime renders the same templates again with
//! real values when it starts an instance.

use crate::diag::did_you_mean;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, context};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What the templates may read from the machine. Tests replace it.
pub trait Host: Send + Sync {
    /// The value of an environment variable, if set.
    fn env_var(&self, name: &str) -> Option<String>;
    /// Whether a file exists (secret files are checked, never read, while planning).
    fn file_exists(&self, path: &Path) -> bool;
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
    used_secrets: Arc<Mutex<BTreeSet<String>>>,
}

impl Templates {
    pub(crate) fn new(
        host: Arc<dyn Host>,
        vars: BTreeMap<String, String>,
        secrets: BTreeSet<String>,
    ) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(50_000));
        env.set_recursion_limit(32);
        env.add_function("env", move |name: String, default: Option<String>| {
            host.env_var(&name)
                .or(default)
                .ok_or_else(|| op_error(format!("environment variable `{name}` is not set")))
        });
        let used_secrets = Arc::new(Mutex::new(BTreeSet::new()));
        let used = used_secrets.clone();
        env.add_function("secret", move |name: String| {
            if !secrets.contains(&name) {
                let hint = did_you_mean(&name, secrets.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(op_error(format!("unknown secret `{name}`{hint}")));
            }
            used.lock()
                .map_err(|_| op_error("internal lock poisoned".into()))?
                .insert(name);
            Ok("***".to_string())
        });
        env.add_function("var", move |name: String| {
            vars.get(&name).cloned().ok_or_else(|| {
                let hint = did_you_mean(&name, vars.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                op_error(format!("unknown var `{name}`{hint}"))
            })
        });
        env.add_function("random_string", |n: u32| {
            if (1..=256).contains(&n) {
                Ok(format!("<random_string({n})>"))
            } else {
                Err(op_error(format!(
                    "random_string({n}): the length must be 1 to 256"
                )))
            }
        });
        env.add_function("now", || "<now>".to_string());
        env.add_function("base64", |text: String| base64(text.as_bytes()));
        env.add_filter("base64", |text: String| base64(text.as_bytes()));
        Templates { env, used_secrets }
    }

    /// Renders a string for planning. Strings without template syntax are returned as is.
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
        let ctx = context! {
            port => "<port>",
            revision => "<revision>",
            server => context! { name => scope.server.unwrap_or_default() },
        };
        template.render(ctx).map_err(|e| TemplateError {
            message: detail(&e),
            help: help_for(&e),
        })
    }

    /// Names of the secrets the rendered templates referred to.
    pub(crate) fn used_secrets(&self) -> BTreeSet<String> {
        self.used_secrets
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
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
            (name == "HOME").then(|| "/home/me".to_string())
        }
        fn file_exists(&self, _: &Path) -> bool {
            false
        }
    }

    fn templates() -> Templates {
        let vars = BTreeMap::from([("level".to_string(), "debug".to_string())]);
        Templates::new(
            Arc::new(NoHost),
            vars,
            BTreeSet::from(["token".to_string()]),
        )
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
