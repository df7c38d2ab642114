//! The fleet file's `state:` block: where the control plane keeps its state store (the
//! state directory's SQLite file, or a PostgreSQL database), checked into [`State`].
//!
//! Deliberately not here: reading the URL's secret or connecting (the control plane does,
//! when it starts).

use super::Validator;
use crate::model::{Postgres, State};
use crate::raw::RawState;
use crate::template::{Scope, Templates};

/// The shortest lease: the leader renews every third of it, a round trip to the database each.
const MIN_LEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// How a URL's secret appears in the shown text.
const HIDDEN: &str = "***";

impl Validator {
    pub(super) fn state(&mut self, raw: Option<&RawState>, templates: &Templates) -> State {
        // A `postgres:` that did not decode has its error already.
        let Some(postgres) = raw.and_then(|s| s.postgres.0.as_ref()) else {
            return State::default();
        };
        let Some(url) = &postgres.value.url else {
            self.error("the `postgres` block has no `url`", postgres.span)
                .help = Some(
                "add `url: \"{{ secret('state_db') }}\"` with a secret holding `postgres://USER:PASSWORD@HOST:5432/DATABASE`"
                    .into(),
            );
            return State::default();
        };
        let (text, secrets) =
            templates.noting_secrets(|| self.render(templates, url, Scope::FLEET));
        if let Some(problem) = url_problem(&text.shown) {
            let help = match problem {
                UrlProblem::Scheme => {
                    "write a PostgreSQL URL, `postgres://USER@HOST:5432/DATABASE` (libpq's key=value form is not read)"
                }
                UrlProblem::Password => {
                    "a password written in the file would be kept in every revision the store records: declare a secret and write `postgres://USER:{{ secret('state_db_password') }}@HOST/DATABASE`, or the whole URL as `{{ secret('state_db') }}`"
                }
            };
            self.error(problem.message(), url.span).help = Some(help.into());
        } else if plain_to_another_host(&text.shown) {
            self.warning(
                "`sslmode=disable` to another host: the fleet's state and the database password travel unencrypted",
                url.span,
            )
            .help = Some(
                "leave `sslmode` out (TLS, the certificate verified) and name the server's CA with `sslrootcert=FILE` if the system does not trust it"
                    .into(),
            );
        }
        let lease = self.duration(postgres.value.lease.as_ref(), Postgres::DEFAULT_LEASE);
        if let Some(written) = &postgres.value.lease
            && lease < MIN_LEASE
        {
            self.error(
                format!("a lease of {} is shorter than a second", written.value.0),
                written.span,
            )
            .help = Some(
                "the leader renews every third of it, across the network: give it at least `1s` (default `15s`)"
                    .into(),
            );
        }
        State {
            postgres: Some(Postgres {
                url: text,
                secrets,
                span: url.span,
                lease,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlProblem {
    Scheme,
    Password,
}

impl UrlProblem {
    fn message(self) -> &'static str {
        match self {
            UrlProblem::Scheme => "the state database's URL is not a `postgres://` URL",
            UrlProblem::Password => "the state database's password is written in the file",
        }
    }
}

/// What is wrong with a PostgreSQL URL as shown (secrets as `***`), if anything can be
/// told before its secrets are read. A URL that is a secret as a whole is checked when
/// the control plane reads it.
fn url_problem(shown: &str) -> Option<UrlProblem> {
    if shown.starts_with(HIDDEN) {
        return None;
    }
    let rest = shown
        .strip_prefix("postgres://")
        .or_else(|| shown.strip_prefix("postgresql://"));
    let Some(rest) = rest else {
        return Some(UrlProblem::Scheme);
    };
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before, query),
        None => (rest, ""),
    };
    let authority = authority.split('/').next().unwrap_or_default();
    let in_userinfo = authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password);
    // libpq also reads a password from the query string.
    let in_query = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "password")
        .map(|(_, password)| password);
    let written = [in_userinfo, in_query]
        .into_iter()
        .flatten()
        .any(|password| !password.is_empty() && !password.contains(HIDDEN));
    written.then_some(UrlProblem::Password)
}

/// Whether the URL turns TLS off for a host that is not this machine (TLS is on by default
/// for every other host).
fn plain_to_another_host(shown: &str) -> bool {
    let Some((before, query)) = shown.split_once('?') else {
        return false;
    };
    let disabled = query.split('&').any(|pair| pair == "sslmode=disable");
    let authority = before
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or_default());
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let local = host.is_empty()
        || host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || query
            .split('&')
            .any(|pair| pair.starts_with("host=%2F") || pair.starts_with("host=/"));
    disabled && !local
}

#[cfg(test)]
mod tests {
    use super::{UrlProblem, plain_to_another_host, url_problem};

    #[test]
    fn only_plain_connections_to_other_hosts_are_warned_of() {
        for (url, warned) in [
            ("postgres://u@db.internal/state?sslmode=disable", true),
            (
                "postgres://u:***@10.0.0.7:5432/state?application_name=a&sslmode=disable",
                true,
            ),
            ("postgres://u@db.internal/state", false),
            ("postgres://u@db.internal/state?sslmode=require", false),
            ("postgres://u@127.0.0.1:5432/state?sslmode=disable", false),
            ("postgres://u@[::1]/state?sslmode=disable", false),
            ("postgres://u@localhost/state?sslmode=disable", false),
            (
                "postgres:///state?host=/run/postgresql&sslmode=disable",
                false,
            ),
        ] {
            assert_eq!(plain_to_another_host(url), warned, "{url}");
        }
    }

    #[test]
    fn a_password_must_come_from_a_secret() {
        for fine in [
            "***",
            "postgres://mcpfleet@db:5432/state",
            "postgresql://mcpfleet:***@db/state",
            "postgres:///state?host=/run/postgresql",
            "postgres://mcpfleet@db/state?password=***&sslmode=require",
            "postgres://db/state?application_name=a:b@c",
        ] {
            assert_eq!(url_problem(fine), None, "{fine}");
        }
        for (bad, problem) in [
            ("postgres://mcpfleet:hunter2@db/state", UrlProblem::Password),
            ("postgres://u:hunter2@***/state", UrlProblem::Password),
            (
                "postgres://u@db/state?sslmode=require&password=hunter2",
                UrlProblem::Password,
            ),
            ("mysql://u@db/state", UrlProblem::Scheme),
            ("host=db user=mcpfleet", UrlProblem::Scheme),
        ] {
            assert_eq!(url_problem(bad), Some(problem), "{bad}");
        }
    }
}
