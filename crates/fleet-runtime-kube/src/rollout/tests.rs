use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::{RolloutState, rollout_state};

/// A Deployment at `generation` wanting `desired` replicas, with the status counts given as
/// (observedGeneration, replicas, updated, available).
fn deployment(
    generation: i64,
    desired: i32,
    (observed, total, updated, available): (i64, i32, i32, i32),
) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": "search", "namespace": "tools", "generation": generation },
        "spec": { "replicas": desired, "selector": {}, "template": {} },
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": available,
        },
    }))
    .unwrap()
}

fn progressing(
    observed: bool,
    desired: i32,
    updated: i32,
    available: i32,
    total: i32,
) -> RolloutState {
    RolloutState::Progressing {
        observed,
        desired,
        updated,
        available,
        total,
    }
}

#[test]
fn rollout_state_is_ready_only_when_every_count_matches_the_observed_spec() {
    let cases = [
        (
            "all replicas updated and available",
            deployment(3, 2, (3, 2, 2, 2)),
            RolloutState::Ready,
        ),
        (
            "controller ahead of the spec counts as observed",
            deployment(3, 2, (4, 2, 2, 2)),
            RolloutState::Ready,
        ),
        (
            "controller has not seen the new spec: counts are the old spec's",
            deployment(4, 2, (3, 2, 2, 2)),
            progressing(false, 2, 2, 2, 2),
        ),
        (
            "one replica not yet updated",
            deployment(3, 2, (3, 2, 1, 2)),
            progressing(true, 2, 1, 2, 2),
        ),
        (
            "updated but not yet available",
            deployment(3, 2, (3, 2, 2, 1)),
            progressing(true, 2, 2, 1, 2),
        ),
        (
            "an old replica still terminating",
            deployment(3, 2, (3, 3, 2, 2)),
            progressing(true, 2, 2, 2, 3),
        ),
        (
            "scaled to zero and drained",
            deployment(2, 0, (2, 0, 0, 0)),
            RolloutState::Ready,
        ),
        (
            "scaled to zero, old pods left",
            deployment(2, 0, (2, 1, 0, 0)),
            progressing(true, 0, 0, 0, 1),
        ),
    ];
    for (case, deployment, want) in cases {
        assert_eq!(rollout_state(&deployment), want, "{case}");
    }
}

#[test]
fn rollout_state_defaults_replicas_to_one_and_a_missing_status_to_nothing_yet() {
    let fresh: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "search", "generation": 1 },
        "spec": { "selector": {}, "template": {} },
    }))
    .unwrap();
    assert_eq!(rollout_state(&fresh), progressing(false, 1, 0, 0, 0));
}

#[test]
fn rollout_state_fails_on_progress_deadline_exceeded_but_not_on_a_stale_one() {
    let mut failed = deployment(5, 2, (5, 2, 1, 1));
    failed.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(json!({
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"search-7d9f\" has timed out progressing.",
        }))
        .unwrap(),
    ]);
    assert_eq!(
        rollout_state(&failed),
        RolloutState::Failed {
            message: "ReplicaSet \"search-7d9f\" has timed out progressing.".to_owned()
        }
    );

    // A new spec resets the deadline: the old condition must not fail the new rollout.
    failed.metadata.generation = Some(6);
    assert_eq!(rollout_state(&failed), progressing(false, 2, 1, 1, 2));

    let mut progressing_ok = deployment(5, 2, (5, 2, 1, 1));
    progressing_ok.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(json!({
            "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
        }))
        .unwrap(),
    ]);
    assert_eq!(
        rollout_state(&progressing_ok),
        progressing(true, 2, 1, 1, 2)
    );
}

#[test]
fn rollout_progress_reads_as_counts() {
    assert_eq!(
        progressing(true, 3, 2, 1, 4).to_string(),
        "2 of 3 replicas updated, 1 available, 2 old left"
    );
    assert_eq!(
        progressing(false, 3, 0, 0, 0).to_string(),
        "waiting for the Deployment controller to see the new spec"
    );
}
