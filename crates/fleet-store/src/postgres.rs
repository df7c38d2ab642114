//! The networked implementation: a PostgreSQL database that several control planes can
//! share.

mod queries;
mod schema;
mod tls;

use crate::lease;
use crate::model::now;
use crate::{
    DeploymentKind, DeploymentRecord, DeploymentStatus, FleetRevision, GatewayView, Lease,
    LeaseInfo, NewDeployment, NewEvent, NewFleetRevision, RevisionState, ServerRevision,
    StateExport, StateStore, StepOutcome, StoreError, StoreFuture, StoredAuditRecord, StoredEvent,
};
use fleet_routes::audit::ToolCallRecord;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::error::Severity;
use tokio_postgres::{Client, Config};

/// [`WRITE_LOCK`] as a literal, for [`WRITE_BEGIN`].
macro_rules! write_lock {
    () => {
        7882267358036059508
    };
}

/// The key of the advisory lock every write transaction (and the migration) takes first:
/// writes from every process on the database run one after another, so numbers computed as
/// "the highest plus one" never race, and ids drawn from a sequence commit in order (a
/// reader paging by id never skips a row that commits later with a smaller id). The bytes
/// spell `mcpfleet`.
const WRITE_LOCK: i64 = write_lock!();
const _: () = assert!(WRITE_LOCK == i64::from_be_bytes(*b"mcpfleet"));

/// How long connecting may take before the call fails, unless the URL says
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`StateStore`] in a PostgreSQL database.
///
/// One connection, used by one call at a time. A connection found broken when a call
/// begins (the server restarted, the backend was terminated) is replaced before the call
/// runs; one that breaks during a call fails that call (whose transaction the server
/// rolls back), and the next call connects again. Nothing is retried once it may have
/// taken effect.
///
/// Every write runs in one transaction that first takes the store's advisory lock, so
/// control planes sharing the database never number two things alike. Reads of several
/// statements (a deployment and its journal, an export) see one snapshot.
///
/// TLS follows the URL's `sslmode` (libpq's values) and `sslrootcert`, and whenever TLS is
/// used the server's certificate and name are verified; with no `sslmode`, a database on
/// this machine is reached in plain and any other in TLS or not at all (see `tls.rs`).
///
/// The lease's times are the database server's clock (`clock_timestamp()`), so control
/// planes on hosts whose clocks disagree agree on when it expires. A fenced handle checks
/// its token after taking the write lock, which acquiring the lease takes too.
///
/// Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// The fencing token every write checks, on a [`fenced`](StateStore::fenced) handle.
    fence: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    tls: tls::Rustls,
    /// The URL without its password, for every error.
    database: String,
    client: Mutex<Option<Client>>,
}

/// What a call's transaction does.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Writes, under the store's write lock; on a fenced handle only while its token is
    /// the current lease's.
    Write,
    /// Writes the lease, under the store's write lock, never fenced: taking the lease over
    /// is what fences the previous leader.
    Lease,
    /// Reads, all from one snapshot.
    Read,
}

/// A call's work on the connection, in the transaction [`PostgresStore::run`] began.
type Work<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// libpq's `key=value` form) and brings its schema up to
    /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if `url` does not parse; [`StoreError::Connect`] if the server
    /// cannot be reached or refuses the login; [`StoreError::NewerSchema`] if a newer mcpfleet
    /// migrated the database (nothing is changed); [`StoreError::Database`] if a migration
    /// fails (it is rolled back). No error shows the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let database = redacted(url);
        let invalid = |what: String| StoreError::Invalid {
            what: format!("the state database URL {database} does not parse: {what}"),
        };
        let (rest, params) = tls::take_params(url).map_err(invalid)?;
        let mut config = Config::from_str(&rest).map_err(|e| invalid(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mode = params
            .mode
            .unwrap_or_else(|| tls::Mode::default_for(config.get_hosts()));
        config.ssl_mode(mode.ssl_mode());
        let tls = tls::client_config(params.root_cert.as_deref())
            .map(|config| tls::Rustls(Arc::new(config)))
            .map_err(|reason| StoreError::Connect {
                database: database.clone(),
                reason,
            })?;
        let mut client = connect(&config, &tls, &database).await?;
        schema::migrate(&mut client, &database).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                tls,
                database,
                client: Mutex::new(Some(client)),
            }),
            fence: None,
        })
    }

    /// The database's URL without its password.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// Runs `work` in a transaction of `access` and commits it.
    fn run<T, F>(&self, access: Access, work: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Client) -> Work<'c, T> + Send + 'static,
    {
        Box::pin(async move {
            let inner = &*self.inner;
            let mut slot = inner.client.lock().await;
            // Taken out for the call and put back after it: a call whose future is dropped
            // midway drops the connection too, and the server rolls its transaction back.
            let mut client = match slot.take() {
                Some(client) if !client.is_closed() => client,
                _ => connect(&inner.config, &inner.tls, &inner.database).await?,
            };
            if let Err(e) = client.batch_execute(access.begin()).await {
                if !ended_the_session(&e) {
                    return Err(inner.failed(&e));
                }
                // The connection had broken before the call (a restarted server, a
                // terminated backend): nothing of it can have taken effect, so it runs once
                // on a new connection.
                client = connect(&inner.config, &inner.tls, &inner.database).await?;
                client
                    .batch_execute(access.begin())
                    .await
                    .map_err(|e| inner.failed(&e))?;
            }
            let fence = match access {
                Access::Write => self.fence,
                Access::Lease | Access::Read => None,
            };
            let checked_work = async {
                if let Some(token) = fence {
                    queries::check_fence(&client, token).await?;
                }
                work(&client).await
            };
            let result = match checked_work.await.map_err(|e| inner.named(e)) {
                Ok(value) => client
                    .batch_execute("COMMIT")
                    .await
                    .map(|()| value)
                    .map_err(|e| inner.failed(&e)),
                Err(e) => match client.batch_execute("ROLLBACK").await {
                    Ok(()) => Err(e),
                    // The connection is gone with the transaction: the next call connects.
                    Err(_) => return Err(e),
                },
            };
            if !client.is_closed() {
                *slot = Some(client);
            }
            result
        })
    }
}

impl Access {
    /// The statements that begin a transaction of this access.
    fn begin(self) -> &'static str {
        match self {
            // Read committed: each statement after the lock sees every write committed
            // before it was granted.
            Access::Write | Access::Lease => WRITE_BEGIN,
            Access::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }
}

/// `BEGIN` and the write lock ([`WRITE_LOCK`]).
const WRITE_BEGIN: &str = concat!(
    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(",
    write_lock!(),
    ")"
);

/// Whether `e` means the session is over: the connection closed, or the server's last word
/// before closing it (a `FATAL` error, e.g. the backend was terminated).
fn ended_the_session(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error().is_some_and(|db| {
            matches!(
                db.parsed_severity(),
                Some(Severity::Fatal | Severity::Panic)
            )
        })
}

impl Inner {
    /// `e`, naming the database if it is the database's failure.
    fn named(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Database(what) => {
                StoreError::Database(format!("{}: {what}", self.database))
            }
            other => other,
        }
    }

    /// A database error, naming the database.
    fn failed(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Database(format!("{}: {}", self.database, db_error(e)))
    }
}

/// A new connection, its driver spawned on the current tokio runtime.
async fn connect(config: &Config, tls: &tls::Rustls, database: &str) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(tls.clone()).await.map_err(|e| {
        let mut reason = db_error(&e);
        if reason.contains("certificate") {
            reason.push_str(
                " (the server's certificate must be issued by a CA the URL's \
                         `sslrootcert=FILE` or the system's trust store holds, for the host \
                         name in the URL)",
            );
        }
        StoreError::Connect {
            database: database.to_owned(),
            reason,
        }
    })?;
    // Ends when the connection does; its error shows on the next call as a closed client.
    tokio::spawn(connection);
    // A control plane stopped inside a transaction (SIGSTOP, a frozen VM) would hold the
    // write lock every writer takes, a standby's lease included, for as long as it stays
    // stopped: the server ends such a session instead. No call of the store idles inside a
    // transaction for more than milliseconds.
    client
        .batch_execute(IDLE_IN_TRANSACTION)
        .await
        .map_err(|e| StoreError::Connect {
            database: database.to_owned(),
            reason: db_error(&e),
        })?;
    Ok(client)
}

/// How long a session may sit inside a transaction before the server ends it.
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = '5s'";

/// A PostgreSQL error as text: the server's message with its detail when the server said
/// something, else the client's.
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// `url` with its password replaced by `***`, in the URL form (`postgres://user:pw@…`,
/// `?password=…`) and libpq's `key=value` form alike: what errors show of a database. A URL
/// that does not parse loses its whole user information and query.
pub fn redacted(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Some((scheme, rest)) = url.split_once("://") else {
        return redacted_keywords(url);
    };
    let Ok(mut parsed) = url::Url::parse(url) else {
        let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        return format!("{scheme}://{HIDDEN}@{host}");
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, and this one has one.
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    HIDDEN.to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// libpq's `key=value` form with the password's value replaced by `***`. A quoted password
/// may hold spaces: everything after `password=` up to the next word that is a `key=` goes.
fn redacted_keywords(keywords: &str) -> String {
    let mut out = Vec::new();
    let mut hiding = false;
    for word in keywords.split(' ') {
        let key = word
            .split_once('=')
            .map(|(key, _)| key)
            .filter(|key| key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if key == Some("password") {
            out.push("password=***".to_owned());
            hiding = true;
        } else if hiding && key.is_none() {
            continue;
        } else {
            hiding = false;
            out.push(word.to_owned());
        }
    }
    out.join(" ")
}

impl StateStore for PostgresStore {
    fn record_fleet_revision(&self, new: NewFleetRevision) -> StoreFuture<'_, FleetRevision> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::insert_fleet_revision(tx, new, &now()).await })
        })
    }

    fn fleet_revision(&self, number: u64) -> StoreFuture<'_, Option<FleetRevision>> {
        self.run(Access::Read, move |tx| {
            Box::pin(queries::fleet_revision(tx, number))
        })
    }

    fn latest_fleet_revision(&self) -> StoreFuture<'_, Option<FleetRevision>> {
        self.run(Access::Read, |tx| {
            Box::pin(queries::latest_fleet_revision(tx))
        })
    }

    fn fleet_revisions(&self) -> StoreFuture<'_, Vec<FleetRevision>> {
        self.run(Access::Read, |tx| Box::pin(queries::fleet_revisions(tx)))
    }

    fn server_revision(
        &self,
        server: &str,
        number: u64,
    ) -> StoreFuture<'_, Option<ServerRevision>> {
        let server = server.to_owned();
        self.run(Access::Read, move |tx| {
            Box::pin(async move { queries::server_revision(tx, &server, number).await })
        })
    }

    fn server_revisions(&self, server: &str) -> StoreFuture<'_, Vec<ServerRevision>> {
        let server = server.to_owned();
        self.run(Access::Read, move |tx| {
            Box::pin(async move { queries::server_revisions(tx, &server).await })
        })
    }

    fn set_server_revision_state(
        &self,
        server: &str,
        number: u64,
        state: RevisionState,
        reason: Option<String>,
    ) -> StoreFuture<'_, ()> {
        let server = server.to_owned();
        self.run(Access::Write, move |tx| {
            Box::pin(async move {
                queries::set_server_revision_state(tx, &server, number, state, reason).await
            })
        })
    }

    fn serving_fleet_revision(&self) -> StoreFuture<'_, Option<u64>> {
        self.run(Access::Read, |tx| {
            Box::pin(queries::serving_fleet_revision(tx))
        })
    }

    fn record_and_begin_deployment(
        &self,
        revision: NewFleetRevision,
        kind: DeploymentKind,
        reason: Option<String>,
    ) -> StoreFuture<'_, (FleetRevision, DeploymentRecord)> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move {
                queries::record_and_begin_deployment(tx, revision, kind, reason, &now()).await
            })
        })
    }

    fn begin_deployment(&self, new: NewDeployment) -> StoreFuture<'_, DeploymentRecord> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::insert_deployment(tx, new, &now()).await })
        })
    }

    fn append_step(&self, deployment: u64, step: serde_json::Value) -> StoreFuture<'_, u64> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::append_step(tx, deployment, &step, &now()).await })
        })
    }

    fn confirm_step(
        &self,
        deployment: u64,
        seq: u64,
        outcome: StepOutcome,
        detail: Option<String>,
    ) -> StoreFuture<'_, ()> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move {
                queries::confirm_step(tx, deployment, seq, outcome, detail, &now()).await
            })
        })
    }

    fn finish_deployment(
        &self,
        id: u64,
        state: DeploymentStatus,
        reason: Option<String>,
    ) -> StoreFuture<'_, ()> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::finish_deployment(tx, id, state, reason, &now()).await })
        })
    }

    fn deployment(&self, id: u64) -> StoreFuture<'_, Option<DeploymentRecord>> {
        self.run(Access::Read, move |tx| {
            Box::pin(queries::deployment(tx, id))
        })
    }

    fn deployments(&self) -> StoreFuture<'_, Vec<DeploymentRecord>> {
        self.run(Access::Read, |tx| Box::pin(queries::deployments(tx)))
    }

    fn unfinished_deployments(&self) -> StoreFuture<'_, Vec<DeploymentRecord>> {
        self.run(Access::Read, |tx| {
            Box::pin(queries::unfinished_deployments(tx))
        })
    }

    fn append_events(&self, events: Vec<NewEvent>) -> StoreFuture<'_, Vec<u64>> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::append_events(tx, &events).await })
        })
    }

    fn events(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<StoredEvent>> {
        self.run(Access::Read, move |tx| {
            Box::pin(queries::events(tx, after, limit))
        })
    }

    fn latest_events(&self, limit: usize) -> StoreFuture<'_, Vec<StoredEvent>> {
        self.run(Access::Read, move |tx| {
            Box::pin(queries::latest_events(tx, limit))
        })
    }

    fn append_audit(&self, records: Vec<ToolCallRecord>) -> StoreFuture<'_, ()> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::append_audit(tx, &records).await })
        })
    }

    fn audit(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<StoredAuditRecord>> {
        self.run(Access::Read, move |tx| {
            Box::pin(queries::audit(tx, after, limit))
        })
    }

    fn latest_audit(&self, limit: usize) -> StoreFuture<'_, Vec<StoredAuditRecord>> {
        self.run(Access::Read, move |tx| {
            Box::pin(queries::latest_audit(tx, limit))
        })
    }

    fn export(&self) -> StoreFuture<'_, StateExport> {
        self.run(Access::Read, |tx| Box::pin(queries::export(tx)))
    }

    fn import(&self, state: StateExport) -> StoreFuture<'_, ()> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::import(tx, &state).await })
        })
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> StoreFuture<'_, Option<Lease>> {
        let holder = holder.to_owned();
        self.run(Access::Lease, move |tx| {
            Box::pin(
                async move { queries::acquire_lease(tx, &holder, lease::ttl_millis(ttl)?).await },
            )
        })
    }

    fn renew_lease(&self, held: &Lease, ttl: Duration) -> StoreFuture<'_, Lease> {
        let held = held.clone();
        self.run(Access::Lease, move |tx| {
            Box::pin(async move { queries::renew_lease(tx, &held, lease::ttl_millis(ttl)?).await })
        })
    }

    fn release_lease(&self, held: &Lease) -> StoreFuture<'_, ()> {
        let held = held.clone();
        self.run(Access::Lease, move |tx| {
            Box::pin(async move { queries::release_lease(tx, &held).await })
        })
    }

    fn lease(&self) -> StoreFuture<'_, Option<LeaseInfo>> {
        self.run(Access::Read, |tx| Box::pin(queries::lease(tx)))
    }

    fn publish_gateway_view(&self, body: serde_json::Value) -> StoreFuture<'_, u64> {
        self.run(Access::Write, move |tx| {
            Box::pin(async move { queries::publish_gateway_view(tx, &body, &now()).await })
        })
    }

    fn gateway_view(&self, known: u64) -> StoreFuture<'_, Option<GatewayView>> {
        self.run(Access::Read, move |tx| {
            Box::pin(queries::gateway_view(tx, known))
        })
    }

    fn fenced(&self, token: u64) -> Arc<dyn StateStore> {
        Arc::new(Self {
            fence: Some(token),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn redacted_hides_every_spelling_of_the_password() {
        assert_eq!(
            redacted("postgres://fleet:s3cret@db.internal:5432/mcpfleet"),
            "postgres://fleet:***@db.internal:5432/mcpfleet"
        );
        assert_eq!(
            redacted("postgresql://fleet@db/mcpfleet?sslmode=disable&password=s3cret"),
            "postgresql://fleet@db/mcpfleet?sslmode=disable&password=***"
        );
        assert_eq!(
            redacted("host=db user=fleet password='s3 cret' dbname=mcpfleet"),
            "host=db user=fleet password=*** dbname=mcpfleet"
        );
        assert_eq!(
            redacted("postgres://fleet@db/mcpfleet"),
            "postgres://fleet@db/mcpfleet"
        );
        assert_eq!(
            redacted("postgres://fleet:s3cret@db:no-port/mcpfleet?password=s3cret"),
            "postgres://***@db:no-port/mcpfleet"
        );
    }
}
