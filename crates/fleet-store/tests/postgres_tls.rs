//! TLS to the PostgreSQL store, against the test cluster (which serves TLS with a
//! certificate from a CA only its `ca.pem` trusts): the URL's `sslmode` and `sslrootcert`
//! as libpq reads them, and the certificate always verified when TLS is used.

use fleet_store::{NewEvent, PostgresStore, StateStore, StoreError};
use fleet_testkit::postgres as pg;

fn event() -> NewEvent {
    NewEvent {
        time: "2026-01-02T03:04:05.006Z".to_owned(),
        kind: "probe".to_owned(),
        server: None,
        revision: None,
        deployment: None,
        instance: None,
        message: "written over the connection under test".to_owned(),
    }
}

/// The database's name, the last part of its URL.
fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// Whether the store's connections to `database` use TLS, as the server sees them
/// (`pg_stat_ssl`); `psql` itself is connected to another database.
fn connections_over_tls(database: &str) -> Vec<bool> {
    pg::cluster()
        .psql(
            "postgres",
            &format!(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = '{database}'"
            ),
        )
        .lines()
        .map(|line| line == "t")
        .collect()
}

#[tokio::test]
async fn postgres_tls_with_the_urls_root_certificate_is_verified_and_used() {
    let url = pg::fresh_database();
    let with_tls = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        pg::cluster().ca_file().display()
    );
    let store = PostgresStore::connect(&with_tls).await.unwrap();
    store.append_events(vec![event()]).await.unwrap();
    assert_eq!(connections_over_tls(name_of(&url)), [true]);
}

#[tokio::test]
async fn postgres_a_certificate_nothing_trusted_issued_is_refused_not_taken() {
    let url = pg::fresh_database();
    // `require` names no root: the operating system's store, which knows nothing of the
    // test CA. libpq would take any certificate here; mcpfleet verifies.
    let with_password = url.replacen("postgres@", "postgres:pw-91ab@", 1);
    let err = PostgresStore::connect(&format!("{with_password}?sslmode=require"))
        .await
        .unwrap_err();
    let said = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{said}");
    assert!(said.contains("sslrootcert=FILE"), "{said}");
    assert!(!said.contains("pw-91ab"), "{said}");
    assert_eq!(connections_over_tls(name_of(&url)), Vec::<bool>::new());

    let missing = PostgresStore::connect(&format!("{url}?sslrootcert=/nonexistent/ca.pem"))
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
}

#[tokio::test]
async fn postgres_on_this_machine_without_sslmode_is_plain_and_disable_is_plain_anywhere() {
    let url = pg::fresh_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    store.append_events(vec![event()]).await.unwrap();
    assert_eq!(connections_over_tls(name_of(&url)), [false]);
    drop(store);

    let url = pg::fresh_database();
    let store = PostgresStore::connect(&format!("{url}?sslmode=disable"))
        .await
        .unwrap();
    store.append_events(vec![event()]).await.unwrap();
    assert_eq!(connections_over_tls(name_of(&url)), [false]);
}

#[tokio::test]
async fn postgres_an_sslmode_libpq_does_not_know_is_refused() {
    let url = pg::fresh_database();
    let err = PostgresStore::connect(&format!("{url}?sslmode=always"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("sslmode `always`"), "{err}");
}
