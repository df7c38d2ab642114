//! The API edge: what the engine reports ([`fleet_engine::report`]) as the admin API's types
//! ([`fleet_api::types`]), whose JSON is the documented `--output json` contract.
//!
//! The one place the two vocabularies meet. Every enum maps by an exhaustive `match`, so a
//! state or event kind added on either side does not build until it is mapped here.

use fleet_api::types as api;
use fleet_engine::report as engine;

/// The fleet's status as `GET /v1/status` answers it; `admin_url` is the TCP admin
/// listener's, which only the control plane knows.
pub fn status(status: engine::FleetStatus, admin_url: Option<&str>) -> api::Status {
    api::Status {
        fleet: status.fleet,
        pid: std::process::id(),
        state_dir: status.state_dir.display().to_string(),
        deployment: api::Deployment {
            state: deployment_state(status.deployment.state),
            started_at: status.deployment.started_at,
            finished_at: status.deployment.finished_at,
            reason: status.deployment.reason,
        },
        servers: status.servers.into_iter().map(server).collect(),
        admin_url: admin_url.map(str::to_string),
    }
}

fn server(server: engine::ServerStatus) -> api::ServerStatus {
    api::ServerStatus {
        name: server.name,
        transport: server.transport,
        wave: server.wave,
        state: server_state(server.state),
        reason: server.reason,
        endpoint: server.endpoint,
        revision: server.revision,
        traffic: server
            .traffic
            .into_iter()
            .map(|share| api::RevisionWeight {
                revision: share.revision,
                weight: share.weight,
            })
            .collect(),
        rollout: server.rollout.map(rollout),
        instances: server.instances.into_iter().map(instance).collect(),
    }
}

fn instance(instance: engine::InstanceStatus) -> api::InstanceStatus {
    api::InstanceStatus {
        id: instance.id,
        revision: instance.revision,
        pid: instance.pid,
        container: instance.container.clone(),
        state: server_state(instance.state),
        restarts: instance.restarts,
        port: instance.port,
        last_check: instance.last_check.map(check),
    }
}

fn check(check: engine::CheckResult) -> api::CheckSummary {
    api::CheckSummary {
        at: check.at,
        kind: check.kind,
        passed: check.passed,
        took_ms: check.took_ms,
        detail: check.detail,
    }
}

fn rollout(rollout: engine::RolloutProgress) -> api::RolloutStatus {
    api::RolloutStatus {
        strategy: match rollout.strategy {
            engine::RolloutStrategy::Canary => api::RolloutStrategy::Canary,
        },
        from_revision: rollout.from_revision,
        to_revision: rollout.to_revision,
        step: rollout.step,
        steps: rollout.steps,
        weight: rollout.weight,
        state: match rollout.state {
            engine::RolloutState::Progressing => api::RolloutState::Progressing,
            engine::RolloutState::Paused => api::RolloutState::Paused,
            engine::RolloutState::WaitingForPromote => api::RolloutState::WaitingForPromote,
            engine::RolloutState::WaitingForAPassingAnalysis => {
                api::RolloutState::WaitingForAPassingAnalysis
            }
        },
        failures_in_a_row: rollout.failures_in_a_row,
        last_analysis: rollout.last_analysis().cloned().map(analysis),
        analyses: rollout.analyses.into_iter().map(analysis).collect(),
    }
}

fn analysis(interval: engine::IntervalSummary) -> api::AnalysisSummary {
    api::AnalysisSummary {
        at: interval.at,
        step: interval.step,
        verdict: match interval.verdict {
            engine::Verdict::Pass => api::Verdict::Pass,
            engine::Verdict::Fail => api::Verdict::Fail,
            engine::Verdict::Inconclusive => api::Verdict::Inconclusive,
        },
        requests: interval.requests,
        error_rate: interval.error_rate,
        canary_p95_ms: interval.canary_p95_ms,
        stable_p95_ms: interval.stable_p95_ms,
        reason: interval.reason,
    }
}

/// `POST /v1/check`'s answer.
pub fn check_run(run: engine::CheckRun) -> api::CheckRun {
    api::CheckRun {
        passed: run.passed,
        results: run
            .results
            .into_iter()
            .map(|checks| api::InstanceChecks {
                server: checks.server,
                instance: checks.instance,
                checks: checks.checks.into_iter().map(check).collect(),
            })
            .collect(),
    }
}

/// `GET /v1/deployed`'s entry for one server.
pub fn deployed(serving: engine::ServingRevision) -> api::DeployedServer {
    api::DeployedServer {
        name: serving.name,
        revision: serving.revision,
        hash: serving.hash,
        spec: serving.spec,
    }
}

/// An event as the event stream and the state store show it.
pub fn event(event: engine::Event) -> api::Event {
    api::Event {
        time: event.time,
        kind: event_kind(event.kind),
        server: event.server,
        revision: event.revision,
        deployment: event.deployment,
        instance: event.instance,
        message: event.message,
    }
}

pub fn deployment_state(state: engine::DeploymentState) -> api::DeploymentState {
    match state {
        engine::DeploymentState::InProgress => api::DeploymentState::InProgress,
        engine::DeploymentState::Succeeded => api::DeploymentState::Succeeded,
        engine::DeploymentState::Failed => api::DeploymentState::Failed,
        engine::DeploymentState::RolledBack => api::DeploymentState::RolledBack,
        engine::DeploymentState::Paused => api::DeploymentState::Paused,
        engine::DeploymentState::Stopping => api::DeploymentState::Stopping,
        engine::DeploymentState::Stopped => api::DeploymentState::Stopped,
    }
}

fn server_state(state: engine::ServerState) -> api::ServerState {
    match state {
        engine::ServerState::Pending => api::ServerState::Pending,
        engine::ServerState::Starting => api::ServerState::Starting,
        engine::ServerState::Checking => api::ServerState::Checking,
        engine::ServerState::Ready => api::ServerState::Ready,
        engine::ServerState::Unhealthy => api::ServerState::Unhealthy,
        engine::ServerState::Restarting => api::ServerState::Restarting,
        engine::ServerState::CrashLooping => api::ServerState::CrashLooping,
        engine::ServerState::Failed => api::ServerState::Failed,
        engine::ServerState::Stopping => api::ServerState::Stopping,
        engine::ServerState::Stopped => api::ServerState::Stopped,
    }
}

fn event_kind(kind: engine::EventKind) -> api::EventKind {
    match kind {
        engine::EventKind::DeploymentStarted => api::EventKind::DeploymentStarted,
        engine::EventKind::DeploymentCompleted => api::EventKind::DeploymentCompleted,
        engine::EventKind::DeploymentFailed => api::EventKind::DeploymentFailed,
        engine::EventKind::ServerStarting => api::EventKind::ServerStarting,
        engine::EventKind::ServerReady => api::EventKind::ServerReady,
        engine::EventKind::ServerFailed => api::EventKind::ServerFailed,
        engine::EventKind::ServerStopped => api::EventKind::ServerStopped,
        engine::EventKind::HealthCheckPassed => api::EventKind::HealthCheckPassed,
        engine::EventKind::HealthCheckFailed => api::EventKind::HealthCheckFailed,
        engine::EventKind::InstanceExited => api::EventKind::InstanceExited,
        engine::EventKind::InstanceRestarted => api::EventKind::InstanceRestarted,
        engine::EventKind::InstanceAdopted => api::EventKind::InstanceAdopted,
        engine::EventKind::CrashLooping => api::EventKind::CrashLooping,
        engine::EventKind::RollbackStarted => api::EventKind::RollbackStarted,
        engine::EventKind::RollbackCompleted => api::EventKind::RollbackCompleted,
        engine::EventKind::RolloutStep => api::EventKind::RolloutStep,
        engine::EventKind::RolloutPaused => api::EventKind::RolloutPaused,
        engine::EventKind::RolloutPromoted => api::EventKind::RolloutPromoted,
        engine::EventKind::PerformanceAlert => api::EventKind::PerformanceAlert,
        engine::EventKind::Recovered => api::EventKind::Recovered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// API → engine, the other way round: with the forward `match`es above, a variant added
    /// on either side does not build until both sides know it.
    fn engine_server_state(state: api::ServerState) -> engine::ServerState {
        match state {
            api::ServerState::Pending => engine::ServerState::Pending,
            api::ServerState::Starting => engine::ServerState::Starting,
            api::ServerState::Checking => engine::ServerState::Checking,
            api::ServerState::Ready => engine::ServerState::Ready,
            api::ServerState::Unhealthy => engine::ServerState::Unhealthy,
            api::ServerState::Restarting => engine::ServerState::Restarting,
            api::ServerState::CrashLooping => engine::ServerState::CrashLooping,
            api::ServerState::Failed => engine::ServerState::Failed,
            api::ServerState::Stopping => engine::ServerState::Stopping,
            api::ServerState::Stopped => engine::ServerState::Stopped,
        }
    }

    fn engine_event_kind(kind: api::EventKind) -> engine::EventKind {
        match kind {
            api::EventKind::DeploymentStarted => engine::EventKind::DeploymentStarted,
            api::EventKind::DeploymentCompleted => engine::EventKind::DeploymentCompleted,
            api::EventKind::DeploymentFailed => engine::EventKind::DeploymentFailed,
            api::EventKind::ServerStarting => engine::EventKind::ServerStarting,
            api::EventKind::ServerReady => engine::EventKind::ServerReady,
            api::EventKind::ServerFailed => engine::EventKind::ServerFailed,
            api::EventKind::ServerStopped => engine::EventKind::ServerStopped,
            api::EventKind::HealthCheckPassed => engine::EventKind::HealthCheckPassed,
            api::EventKind::HealthCheckFailed => engine::EventKind::HealthCheckFailed,
            api::EventKind::InstanceExited => engine::EventKind::InstanceExited,
            api::EventKind::InstanceRestarted => engine::EventKind::InstanceRestarted,
            api::EventKind::InstanceAdopted => engine::EventKind::InstanceAdopted,
            api::EventKind::CrashLooping => engine::EventKind::CrashLooping,
            api::EventKind::RollbackStarted => engine::EventKind::RollbackStarted,
            api::EventKind::RollbackCompleted => engine::EventKind::RollbackCompleted,
            api::EventKind::RolloutStep => engine::EventKind::RolloutStep,
            api::EventKind::RolloutPaused => engine::EventKind::RolloutPaused,
            api::EventKind::RolloutPromoted => engine::EventKind::RolloutPromoted,
            api::EventKind::PerformanceAlert => engine::EventKind::PerformanceAlert,
            api::EventKind::Recovered => engine::EventKind::Recovered,
        }
    }

    /// `None`: a state only the recorded history has (the engine never reports it).
    fn engine_deployment_state(state: api::DeploymentState) -> Option<engine::DeploymentState> {
        match state {
            api::DeploymentState::InProgress => Some(engine::DeploymentState::InProgress),
            api::DeploymentState::Succeeded => Some(engine::DeploymentState::Succeeded),
            api::DeploymentState::Failed => Some(engine::DeploymentState::Failed),
            api::DeploymentState::RolledBack => Some(engine::DeploymentState::RolledBack),
            api::DeploymentState::Paused => Some(engine::DeploymentState::Paused),
            api::DeploymentState::Stopping => Some(engine::DeploymentState::Stopping),
            api::DeploymentState::Stopped => Some(engine::DeploymentState::Stopped),
            api::DeploymentState::Aborted => None,
        }
    }

    /// Each engine state and kind becomes the API value of the same name (a mapping to a
    /// neighbour would compile, and change what `--output json` says), and every API value
    /// the engine can report is reached.
    #[test]
    fn every_engine_state_and_event_kind_becomes_the_api_value_of_its_name() {
        for state in api::ServerState::ALL {
            let ours = engine_server_state(state);
            assert_eq!(server_state(ours), state);
            assert_eq!(
                ours.as_str(),
                state.as_str(),
                "the sentences and JSON agree"
            );
        }
        for state in engine::ServerState::ALL {
            assert_eq!(engine_server_state(server_state(state)), state);
        }
        for kind in api::EventKind::ALL {
            let ours = engine_event_kind(kind);
            assert_eq!(event_kind(ours), kind);
            assert_eq!(format!("{ours:?}"), format!("{kind:?}"));
        }
        for state in api::DeploymentState::ALL {
            if let Some(ours) = engine_deployment_state(state) {
                assert_eq!(deployment_state(ours), state);
                assert_eq!(format!("{ours:?}"), format!("{state:?}"));
                assert_eq!(ours.is_final(), state.is_final());
            }
        }
        for (ours, theirs) in [
            (engine::Verdict::Pass, api::Verdict::Pass),
            (engine::Verdict::Fail, api::Verdict::Fail),
            (engine::Verdict::Inconclusive, api::Verdict::Inconclusive),
        ] {
            let summary = |verdict| engine::IntervalSummary {
                at: String::new(),
                step: 1,
                verdict,
                requests: 0,
                error_rate: None,
                canary_p95_ms: None,
                stable_p95_ms: None,
                reason: String::new(),
            };
            let converted = rollout(engine::RolloutProgress {
                analyses: vec![summary(ours)],
                ..canary(engine::RolloutState::Progressing)
            });
            assert_eq!(converted.last_analysis.unwrap().verdict, theirs);
            assert_eq!(converted.analyses[0].verdict, theirs);
        }
        for (ours, theirs) in [
            (
                engine::RolloutState::Progressing,
                api::RolloutState::Progressing,
            ),
            (engine::RolloutState::Paused, api::RolloutState::Paused),
            (
                engine::RolloutState::WaitingForPromote,
                api::RolloutState::WaitingForPromote,
            ),
            (
                engine::RolloutState::WaitingForAPassingAnalysis,
                api::RolloutState::WaitingForAPassingAnalysis,
            ),
        ] {
            assert_eq!(rollout(canary(ours)).state, theirs);
        }
    }

    fn canary(state: engine::RolloutState) -> engine::RolloutProgress {
        engine::RolloutProgress {
            strategy: engine::RolloutStrategy::Canary,
            from_revision: 1,
            to_revision: 2,
            step: 1,
            steps: 3,
            weight: 10,
            state,
            failures_in_a_row: 2,
            analyses: Vec::new(),
        }
    }

    /// `GET /v1/status` of a fleet with a canary in progress is the JSON the API has always
    /// given, byte for byte: every field where it was, none swapped.
    #[test]
    fn a_fleet_with_a_canary_gives_the_status_json_the_api_always_gave() {
        let check = engine::CheckResult {
            at: "2026-12-05T06:00:01Z".into(),
            kind: "mcp".into(),
            passed: true,
            took_ms: 1.5,
            detail: "modern 2026-07-28, mcp-sample-server 0.1.0, 4 tools".into(),
        };
        let instance = |id: &str, revision, pid, port| engine::InstanceStatus {
            id: id.into(),
            revision,
            pid: Some(pid),
            container: None,
            state: engine::ServerState::Ready,
            restarts: revision as u32 - 1,
            port: Some(port),
            last_check: Some(check.clone()),
        };
        let status = engine::FleetStatus {
            fleet: "shop".into(),
            state_dir: "/var/lib/mcpfleet/shop".into(),
            deployment: engine::DeploymentStatus {
                state: engine::DeploymentState::InProgress,
                started_at: "2026-12-05T06:00:00Z".into(),
                finished_at: None,
                reason: None,
            },
            servers: vec![
                engine::ServerStatus {
                    name: "db".into(),
                    transport: "stdio".into(),
                    wave: 0,
                    state: engine::ServerState::CrashLooping,
                    reason: Some("exited 3 times in a row".into()),
                    endpoint: None,
                    revision: None,
                    traffic: Vec::new(),
                    rollout: None,
                    instances: Vec::new(),
                },
                engine::ServerStatus {
                    name: "api".into(),
                    transport: "http".into(),
                    wave: 1,
                    state: engine::ServerState::Ready,
                    reason: None,
                    endpoint: Some("http://127.0.0.1:7470/mcp/api".into()),
                    revision: Some(1),
                    traffic: vec![
                        engine::TrafficShare {
                            revision: 1,
                            weight: 90,
                        },
                        engine::TrafficShare {
                            revision: 2,
                            weight: 10,
                        },
                    ],
                    rollout: Some(engine::RolloutProgress {
                        analyses: vec![
                            engine::IntervalSummary {
                                at: "2026-12-05T06:00:01Z".into(),
                                step: 1,
                                verdict: engine::Verdict::Inconclusive,
                                requests: 3,
                                error_rate: Some(0.0),
                                canary_p95_ms: None,
                                stable_p95_ms: Some(80.0),
                                reason: "3 requests < 20".into(),
                            },
                            engine::IntervalSummary {
                                at: "2026-12-05T06:00:02Z".into(),
                                step: 1,
                                verdict: engine::Verdict::Fail,
                                requests: 40,
                                error_rate: Some(0.25),
                                canary_p95_ms: Some(120.0),
                                stable_p95_ms: Some(80.0),
                                reason: "error rate 25% > 5%".into(),
                            },
                        ],
                        ..canary(engine::RolloutState::WaitingForAPassingAnalysis)
                    }),
                    instances: vec![
                        instance("api@1#1", 1, 4101, 9001),
                        instance("api@2#1", 2, 4102, 9002),
                    ],
                },
            ],
        };
        let json =
            serde_json::to_string(&super::status(status, Some("http://127.0.0.1:7471"))).unwrap();
        let check = r#"{"at":"2026-12-05T06:00:01Z","kind":"mcp","passed":true,"took_ms":1.5,"detail":"modern 2026-07-28, mcp-sample-server 0.1.0, 4 tools"}"#;
        let failed = r#"{"at":"2026-12-05T06:00:02Z","step":1,"verdict":"fail","requests":40,"error_rate":0.25,"canary_p95_ms":120.0,"stable_p95_ms":80.0,"reason":"error rate 25% > 5%"}"#;
        let expected = [
            r#"{"fleet":"shop","pid":PID,"state_dir":"/var/lib/mcpfleet/shop","#,
            r#""deployment":{"state":"in-progress","started_at":"2026-12-05T06:00:00Z","finished_at":null,"reason":null},"#,
            r#""servers":["#,
            r#"{"name":"db","transport":"stdio","wave":0,"state":"crash-looping","reason":"exited 3 times in a row","endpoint":null,"revision":null,"traffic":[],"instances":[]},"#,
            r#"{"name":"api","transport":"http","wave":1,"state":"ready","reason":null,"endpoint":"http://127.0.0.1:7470/mcp/api","revision":1,"#,
            r#""traffic":[{"revision":1,"weight":90},{"revision":2,"weight":10}],"#,
            r#""rollout":{"strategy":"canary","from_revision":1,"to_revision":2,"step":1,"steps":3,"weight":10,"state":"waiting-for-a-passing-analysis","failures_in_a_row":2,"#,
            r#""last_analysis":FAILED,"#,
            r#""analyses":[{"at":"2026-12-05T06:00:01Z","step":1,"verdict":"inconclusive","requests":3,"error_rate":0.0,"canary_p95_ms":null,"stable_p95_ms":80.0,"reason":"3 requests < 20"},FAILED]},"#,
            r#""instances":["#,
            r#"{"id":"api@1#1","revision":1,"pid":4101,"state":"ready","restarts":0,"port":9001,"last_check":CHECK},"#,
            r#"{"id":"api@2#1","revision":2,"pid":4102,"state":"ready","restarts":1,"port":9002,"last_check":CHECK}"#,
            r#"]}],"admin_url":"http://127.0.0.1:7471"}"#,
        ]
        .concat()
        .replace("PID", &std::process::id().to_string())
        .replace("CHECK", check)
        .replace("FAILED", failed);
        assert_eq!(json, expected);
    }

    /// Events, check runs and deployed servers keep their JSON too.
    #[test]
    fn events_check_runs_and_deployed_servers_give_the_json_the_api_always_gave() {
        let event = event(engine::Event {
            time: "2026-12-05T06:00:03Z".into(),
            kind: engine::EventKind::PerformanceAlert,
            server: Some("api".into()),
            revision: Some(2),
            deployment: Some(7),
            instance: None,
            message: "analysis failed".into(),
        });
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"time":"2026-12-05T06:00:03Z","kind":"performance_alert","server":"api","revision":2,"deployment":7,"instance":null,"message":"analysis failed"}"#
        );
        let run = check_run(engine::CheckRun {
            passed: false,
            results: vec![engine::InstanceChecks {
                server: "api".into(),
                instance: "api@2#1".into(),
                checks: vec![engine::CheckResult {
                    at: "2026-12-05T06:00:04Z".into(),
                    kind: "http".into(),
                    passed: false,
                    took_ms: 3.0,
                    detail: "503".into(),
                }],
            }],
        });
        assert_eq!(
            serde_json::to_string(&run).unwrap(),
            r#"{"passed":false,"results":[{"server":"api","instance":"api@2#1","checks":[{"at":"2026-12-05T06:00:04Z","kind":"http","passed":false,"took_ms":3.0,"detail":"503"}]}]}"#
        );
        let serving = deployed(engine::ServingRevision {
            name: "api".into(),
            revision: 2,
            hash: "ab12".into(),
            spec: serde_json::json!({ "replicas": 1 }),
        });
        assert_eq!(
            serde_json::to_string(&serving).unwrap(),
            r#"{"name":"api","revision":2,"hash":"ab12","spec":{"replicas":1}}"#
        );
    }
}
