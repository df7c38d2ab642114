//! `StdioSession` on the pipes of a sample server the test spawns itself.

use std::time::Duration;

use fleet_mcp::{CheckFailure, CheckReport, DetectedEra, StdioSession};
use fleet_spec::model::{Era, McpCheck};
use tokio::process::Child;

use fleet_testkit::stdio_sample_server;

use crate::{
    HANDSHAKE_TIMEOUT, MARGIN, echo, failure, mcp_check, passed, smoke, sorted, with_timeout,
};

async fn connect(
    child: &mut Child,
    era: Era,
    check: &McpCheck,
) -> Result<(StdioSession, CheckReport), CheckReport> {
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    StdioSession::connect(stdin, stdout, era, check).await
}

#[track_caller]
fn session(
    result: Result<(StdioSession, CheckReport), CheckReport>,
) -> (StdioSession, CheckReport) {
    match result {
        Ok(established) => established,
        Err(report) => panic!("no session: {report}"),
    }
}

#[track_caller]
fn no_session(result: Result<(StdioSession, CheckReport), CheckReport>) -> CheckReport {
    match result {
        Ok((_, report)) => panic!("expected no session, got one: {report}"),
        Err(report) => report,
    }
}

/// The server exits on its own once its pipes are closed; returns its exit status.
async fn exits_after_close(mut child: Child) -> std::process::ExitStatus {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, child.wait())
        .await
        .expect("the server exits after its pipes close")
        .expect("wait for the server")
}

#[tokio::test]
async fn a_session_in_each_era_checks_again_and_closes() {
    for (server_era, era, detected) in [
        ("both", Era::Legacy, DetectedEra::Legacy),
        ("both", Era::Modern, DetectedEra::Modern),
        ("both", Era::Auto, DetectedEra::Modern),
        ("legacy", Era::Auto, DetectedEra::Legacy),
        ("modern", Era::Auto, DetectedEra::Modern),
    ] {
        let mut child = stdio_sample_server(&["--era", server_era]);
        let check = mcp_check(&["echo", "add"], Some(echo("ping", "ping")));
        let (session, first) = session(connect(&mut child, era, &check).await);
        let facts = passed(&first);
        assert_eq!(facts.era, detected, "--era {server_era} probed as {era:?}");
        assert_eq!(session.era(), detected);
        assert_eq!(session.server_name(), "mcp-sample-server");
        assert_eq!(sorted(&facts.tools), ["add", "echo", "fail", "sleep"]);

        for _ in 0..3 {
            let again = session.check(&check).await;
            assert_eq!(passed(&again).tools.len(), 4);
        }
        session.close().await;
        let status = exits_after_close(child).await;
        assert!(status.success(), "{status}");
    }
}

#[tokio::test]
async fn a_failing_first_check_still_yields_the_session() {
    let mut child = stdio_sample_server(&["--tools", "echo"]);
    let check = mcp_check(&["echo", "add"], None);
    let (session, first) = session(connect(&mut child, Era::Legacy, &check).await);
    assert_eq!(
        failure(&first),
        &CheckFailure::MissingTools {
            missing: vec!["add".into()],
            found: 1,
        }
    );
    passed(&session.check(&mcp_check(&["echo"], None)).await);
    session.close().await;
    let status = exits_after_close(child).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_pinned_era_the_server_lacks_is_a_handshake_failure() {
    let mut child = stdio_sample_server(&["--era", "modern"]);
    let report = no_session(connect(&mut child, Era::Legacy, &mcp_check(&[], None)).await);
    let CheckFailure::Handshake { message } = failure(&report) else {
        panic!("expected Handshake, got {:?}", report.outcome);
    };
    assert!(message.contains("-32022"), "{message}");

    let mut child = stdio_sample_server(&["--era", "legacy"]);
    let report = no_session(connect(&mut child, Era::Modern, &mcp_check(&[], None)).await);
    let CheckFailure::Handshake { message } = failure(&report) else {
        panic!("expected Handshake, got {:?}", report.outcome);
    };
    assert!(
        message.contains("does not speak the modern protocol"),
        "{message}"
    );
}

#[tokio::test]
async fn garbage_on_stdout_is_a_clear_handshake_failure() {
    for era in [Era::Legacy, Era::Auto] {
        let mut child = stdio_sample_server(&["--garbage-stdout"]);
        let report = no_session(connect(&mut child, era, &mcp_check(&[], None)).await);
        let CheckFailure::Handshake { message } = failure(&report) else {
            panic!("expected Handshake, got {:?}", report.outcome);
        };
        assert!(message.contains("not JSON-RPC"), "{message}");
        assert!(message.contains("this banner is not JSON-RPC"), "{message}");
        assert!(report.took < Duration::from_secs(2), "{:?}", report.took);
        // The pipes are closed: the server notices (EOF, or a broken pipe on its
        // next write) and exits.
        exits_after_close(child).await;
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_the_handshake_promptly() {
    let timeout = Duration::from_millis(800);
    for era in [Era::Legacy, Era::Modern, Era::Auto] {
        let mut child = stdio_sample_server(&["--never-answer"]);
        let check = with_timeout(mcp_check(&[], None), timeout);
        let report = no_session(connect(&mut child, era, &check).await);
        assert_eq!(
            failure(&report),
            &CheckFailure::HandshakeTimeout { after: timeout },
            "{era:?}"
        );
        assert!(
            report.took < timeout + MARGIN,
            "{era:?} took {:?}",
            report.took
        );
    }
}

#[tokio::test]
async fn a_server_that_crashes_mid_session_is_reported_disconnected() {
    let mut child = stdio_sample_server(&["--crash-after", "1"]);
    let check = mcp_check(&["echo"], Some(echo("one", "one")));
    let (session, first) = session(connect(&mut child, Era::Auto, &check).await);
    passed(&first);

    // The second call is the crash: unanswered, and the process exits with 3.
    let report = session.check(&check).await;
    assert!(
        matches!(failure(&report), CheckFailure::Disconnected { .. }),
        "{:?}",
        report.outcome
    );
    let status = child.wait().await.expect("wait for the server");
    assert_eq!(status.code(), Some(3));

    let report = session.check(&mcp_check(&[], None)).await;
    let CheckFailure::Disconnected { message } = failure(&report) else {
        panic!("expected Disconnected, got {:?}", report.outcome);
    };
    assert!(message.contains("closed stdout"), "{message}");
    assert!(session.is_closed());
    session.close().await;
}

#[tokio::test]
async fn a_slow_call_on_a_session_is_too_slow() {
    let mut child = stdio_sample_server(&["--latency", "3s"]);
    let mut check = mcp_check(
        &[],
        Some(smoke("add", serde_json::json!({ "a": 1, "b": 2 }))),
    );
    check.max_latency = Some(Duration::from_millis(400));
    let (session, first) = session(connect(&mut child, Era::Legacy, &check).await);
    assert!(
        matches!(failure(&first), CheckFailure::TooSlow { .. }),
        "{first}"
    );
    assert!(first.took < Duration::from_secs(3));

    // Without a smoke call the session is quick again.
    passed(&session.check(&mcp_check(&["add"], None)).await);
    session.close().await;
}

/// Old stdio servers the sample server does not imitate, as small `sh` scripts
/// speaking just enough JSON-RPC.
fn scripted_server(script: &str) -> Child {
    tokio::process::Command::new("sh")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sh")
}

/// Ignores `server/discover`; answers it late, after the `initialize` answer is
/// already out; serves one `tools/list`; then waits for EOF.
const SILENT_ON_DISCOVER: &str = r#"
read discover
read init
printf '%s\n' '{"jsonrpc":"2.0","id":"mcpfleet-discover","error":{"code":-32601,"message":"late"}}'
printf '%s\n' '{"jsonrpc":"2.0","id":"mcpfleet-initialize","result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"silent-on-discover","version":"1"}}}'
read initialized
read list
id=$(printf '%s' "$list" | sed 's/.*"id":\([0-9][0-9]*\).*/\1/')
printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}\n' "$id"
while read rest; do :; done
"#;

#[tokio::test]
async fn auto_falls_back_when_discover_goes_unanswered_and_ignores_the_late_reply() {
    let mut child = scripted_server(SILENT_ON_DISCOVER);
    let timeout = Duration::from_secs(2);
    let check = with_timeout(mcp_check(&["echo"], None), timeout);
    let (session, report) = session(connect(&mut child, Era::Auto, &check).await);
    let facts = passed(&report);
    assert_eq!(facts.era, DetectedEra::Legacy);
    assert_eq!(facts.protocol_version, "2025-06-18");
    assert_eq!(facts.server_name, "silent-on-discover");
    // Discover had half the budget before initialize went out.
    assert!(facts.handshake >= timeout / 2, "{:?}", facts.handshake);
    session.close().await;
    let status = exits_after_close(child).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_server_that_exits_on_discover_is_named_as_such() {
    let mut child = scripted_server("read discover; exit 0");
    let report = no_session(connect(&mut child, Era::Auto, &mcp_check(&[], None)).await);
    let CheckFailure::Handshake { message } = failure(&report) else {
        panic!("expected Handshake, got {:?}", report.outcome);
    };
    assert!(
        message.contains("closed stdout after server/discover"),
        "{message}"
    );
    assert!(message.contains("era: legacy"), "{message}");
}

/// A legacy server that logs a line to stdout right after answering `initialize`,
/// then answers every `tools/list`.
const NOISY_AFTER_HANDSHAKE: &str = r#"
while IFS= read -r line; do
  case "$line" in
    *'"method":"initialize"'*)
      printf '%s\n' '{"jsonrpc":"2.0","id":"mcpfleet-initialize","result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"noisy","version":"1"}}}'
      echo 'debug: client initialized' ;;
    *'"method":"tools/list"'*)
      id=$(printf '%s' "$line" | sed 's/.*"id":\([0-9][0-9]*\).*/\1/')
      printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}\n' "$id" ;;
  esac
done
"#;

#[tokio::test]
async fn noise_after_the_handshake_fails_the_next_check_once() {
    let mut child = scripted_server(NOISY_AFTER_HANDSHAKE);
    let check = mcp_check(&["echo"], None);
    let (session, first) = session(connect(&mut child, Era::Legacy, &check).await);
    let CheckFailure::Protocol { message } = failure(&first) else {
        panic!("expected Protocol, got {:?}", first.outcome);
    };
    assert!(message.contains("debug: client initialized"), "{message}");
    passed(&session.check(&check).await);
    session.close().await;
    let status = exits_after_close(child).await;
    assert!(status.success(), "{status}");
}

/// After the handshake: 2,000 log notifications (far more than a pipe holds) and a ping;
/// `tools/list` is answered only once the ping has its answer.
const CHATTY_AND_PINGING: &str = r#"
read init
printf '%s\n' '{"jsonrpc":"2.0","id":"mcpfleet-initialize","result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"chatty","version":"1"}}}'
read initialized
i=0
while [ $i -lt 2000 ]; do
  printf '%s\n' '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"chatter chatter chatter"}}'
  i=$((i+1))
done
printf '%s\n' '{"jsonrpc":"2.0","id":"srv-1","method":"ping"}'
pong=0
pending=""
answer() {
  id=$(printf '%s' "$1" | sed 's/.*"id":\([0-9][0-9]*\).*/\1/')
  printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}\n' "$id"
}
while read line; do
  case "$line" in
    *'"id":"srv-1"'*'"result"'*) pong=1; if [ -n "$pending" ]; then answer "$pending"; pending=""; fi ;;
    *tools/list*) if [ $pong = 1 ]; then answer "$line"; else pending="$line"; fi ;;
  esac
done
"#;

/// A server that logs a lot and pings its client is never left blocked on a full pipe
/// or waiting for a pong: the session reads (and drops) notifications and answers pings
/// as they come, between checks too.
#[tokio::test]
async fn a_chatty_server_that_pings_is_answered_and_never_blocked() {
    let mut child = scripted_server(CHATTY_AND_PINGING);
    let check = with_timeout(mcp_check(&["echo"], None), Duration::from_secs(5));
    let (session, report) = session(connect(&mut child, Era::Legacy, &check).await);
    passed(&report);
    let again = session.check(&check).await;
    passed(&again);
    session.close().await;
    let status = exits_after_close(child).await;
    assert!(status.success(), "{status}");
}
