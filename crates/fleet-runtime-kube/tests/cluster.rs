//! The cluster client against a scripted API server (`tower_test::mock`, tests named
//! `mock_…`: each asserts the requests mcpfleet sends, in order, and answers canned
//! JSON), plus connecting from kubeconfig files and to an API that is not there.

use std::time::{Duration, Instant};

use fleet_runtime_kube::{
    ApiError, ApplyError, ApplyOutcome, CheckArea, Cluster, ClusterAccess, ConnectError,
    FieldConflict, ObjectRef, PreflightReport, RolloutError, RolloutState, SecretKeyRef, Severity,
};
use fleet_spec::model::PodReach;
use fleet_testkit::{TempDir, free_port};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// A cluster whose API server is the returned handle.
fn mock_cluster() -> (Cluster, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (
        Cluster::from_client(client, "https://api.mock.invalid"),
        handle,
    )
}

/// One request as the API server sees it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    body: Option<Value>,
}

impl Seen {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A server-side apply as mcpfleet must send it: PATCH with the apply content type,
    /// field manager `mcpfleet`, never forced.
    fn assert_apply(&self, path: &str) {
        assert_eq!((&self.method, self.path.as_str()), (&Method::PATCH, path));
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(self.param("fieldManager"), Some("mcpfleet"), "{self:?}");
        assert_eq!(self.param("force"), None, "never forced: {self:?}");
    }

    fn assert_get(&self, path: &str) {
        assert_eq!(
            (&self.method, self.path.as_str()),
            (&Method::GET, path),
            "{self:?}"
        );
    }
}

/// The next request, and the handle to answer it.
async fn next(handle: &mut Handle) -> (Seen, Responder) {
    let (request, respond) = handle
        .next_request()
        .await
        .expect("the client sends another request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let query = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.replace("%3D", "="))
        })
        .collect();
    let seen = Seen {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned()),
        body: (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).expect("JSON body")),
    };
    (seen, respond)
}

fn answer(respond: Responder, status: u16, body: &Value) {
    answer_raw(respond, status, serde_json::to_vec(body).unwrap());
}

fn answer_raw(respond: Responder, status: u16, body: Vec<u8>) {
    let response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Body::from(body))
        .unwrap();
    respond.send_response(response);
}

fn not_found() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "not found" })
}

/// `object` as the API server returns it, at `resource_version`.
fn stored(object: &Value, resource_version: &str) -> Value {
    let mut stored = object.clone();
    stored["metadata"]["resourceVersion"] = json!(resource_version);
    stored
}

fn namespace() -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "tools" } })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "search", "namespace": "tools", "labels": { "app.kubernetes.io/managed-by": "mcpfleet" } },
        "spec": { "replicas": 2, "selector": { "matchLabels": { "mcpfleet.io/server": "search" } },
                  "template": { "metadata": { "labels": { "mcpfleet.io/server": "search" } },
                                "spec": { "containers": [{ "name": "server", "image": "registry.example/search:1.2" }] } } },
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "search", "namespace": "tools" },
        "spec": { "selector": { "mcpfleet.io/server": "search" }, "ports": [{ "port": 8080 }] },
    })
}

/// Asserts the client sent nothing more: once it is dropped, the mock sees no request.
async fn assert_no_more_requests(cluster: Cluster, mut handle: Handle) {
    drop(cluster);
    assert!(handle.next_request().await.is_none(), "no further request");
}

#[tokio::test]
async fn mock_apply_sends_each_object_with_field_manager_mcpfleet() {
    let (cluster, mut handle) = mock_cluster();
    let objects = vec![namespace(), deployment(), service()];
    let server = {
        let objects = objects.clone();
        tokio::spawn(async move {
            // Namespace: absent before → created.
            let (seen, respond) = next(&mut handle).await;
            seen.assert_get("/api/v1/namespaces/tools");
            answer(respond, 404, &not_found());
            let (seen, respond) = next(&mut handle).await;
            seen.assert_apply("/api/v1/namespaces/tools");
            assert_eq!(
                seen.body.as_ref(),
                Some(&objects[0]),
                "the object exactly as rendered"
            );
            answer(respond, 201, &stored(&objects[0], "100"));

            // Deployment: there before, the apply moves its resourceVersion → configured.
            let (seen, respond) = next(&mut handle).await;
            seen.assert_get("/apis/apps/v1/namespaces/tools/deployments/search");
            answer(respond, 200, &stored(&objects[1], "200"));
            let (seen, respond) = next(&mut handle).await;
            seen.assert_apply("/apis/apps/v1/namespaces/tools/deployments/search");
            assert_eq!(seen.body.as_ref(), Some(&objects[1]));
            answer(respond, 200, &stored(&objects[1], "201"));

            // Service: the apply is a no-op, the resourceVersion stays → unchanged.
            let (seen, respond) = next(&mut handle).await;
            seen.assert_get("/api/v1/namespaces/tools/services/search");
            answer(respond, 200, &stored(&objects[2], "300"));
            let (seen, respond) = next(&mut handle).await;
            seen.assert_apply("/api/v1/namespaces/tools/services/search");
            assert_eq!(seen.body.as_ref(), Some(&objects[2]));
            answer(respond, 200, &stored(&objects[2], "300"));
            handle
        })
    };

    let report = cluster.apply(&objects).await.expect("applied");
    let handle = server.await.expect("the API server saw what it expected");
    let outcomes: Vec<(String, ApplyOutcome)> = report
        .objects
        .iter()
        .map(|applied| (applied.object.to_string(), applied.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("Namespace tools".to_owned(), ApplyOutcome::Created),
            (
                "Deployment tools/search".to_owned(),
                ApplyOutcome::Configured
            ),
            ("Service tools/search".to_owned(), ApplyOutcome::Unchanged),
        ]
    );
    assert_no_more_requests(cluster, handle).await;
}

/// Every object `render kubernetes` makes of the example fleet (asked for a ServiceMonitor
/// too) is one apply knows where to send, sent as rendered: a kind fleet-manifests renders
/// and this crate's table lacks would otherwise show only against a cluster.
#[tokio::test]
async fn mock_apply_sends_every_object_of_a_rendered_fleet() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes.yaml");
    let text = std::fs::read_to_string(example).unwrap().replacen(
        "\nkubernetes:\n",
        "\nkubernetes:\n  service_monitor: true\n",
        1,
    );
    assert!(
        text.contains("service_monitor: true"),
        "the example has a kubernetes: block"
    );
    let fleet = fleet_spec::load_str(
        "fleet.yaml",
        &text,
        "/fleet".into(),
        &fleet_spec::LoadOptions::default(),
    )
    .into_valid()
    .unwrap_or_else(|errors| panic!("{errors:#?}"));
    let objects =
        fleet_manifests::render(&fleet, &fleet_manifests::Options::new(text.as_str())).unwrap();
    let kinds: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    // The example renders every kind there is (its ServiceMonitor asked for above): the
    // table of kinds apply knows is exactly what render makes, no more, no less.
    let table: std::collections::BTreeSet<&str> = fleet_runtime_kube::kinds::RENDERED
        .iter()
        .map(|kind| kind.kind)
        .collect();
    assert_eq!(kinds, table, "render's kinds and kinds::RENDERED differ");

    let (cluster, mut handle) = mock_cluster();
    let server = {
        let objects = objects.clone();
        tokio::spawn(async move {
            for object in &objects {
                let api_version = object["apiVersion"].as_str().unwrap();
                let prefix = if api_version == "v1" {
                    "/api/v1".to_owned()
                } else {
                    format!("/apis/{api_version}")
                };
                let name = object["metadata"]["name"].as_str().unwrap();
                let (seen, respond) = next(&mut handle).await;
                assert_eq!(seen.method, Method::GET);
                answer(respond, 404, &not_found());
                let (seen, respond) = next(&mut handle).await;
                seen.assert_apply(&seen.path);
                assert!(
                    seen.path.starts_with(&prefix) && seen.path.ends_with(&format!("/{name}")),
                    "{seen:?}"
                );
                match object["metadata"]["namespace"].as_str() {
                    Some(namespace) => assert!(
                        seen.path.contains(&format!("/namespaces/{namespace}/")),
                        "{seen:?}"
                    ),
                    None => assert_eq!(seen.path, format!("/api/v1/namespaces/{name}")),
                }
                assert_eq!(seen.body.as_ref(), Some(object), "sent as rendered");
                answer(respond, 201, &stored(object, "1"));
            }
            handle
        })
    };
    let report = cluster
        .apply(&objects)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let handle = server.await.expect("the API server saw every object");
    assert_eq!(report.objects.len(), objects.len());
    assert!(
        report
            .objects
            .iter()
            .all(|applied| applied.outcome == ApplyOutcome::Created)
    );
    assert_no_more_requests(cluster, handle).await;
}

#[tokio::test]
async fn mock_apply_conflict_names_the_other_manager() {
    let (cluster, mut handle) = mock_cluster();
    let objects = vec![deployment(), service()];
    let server = {
        let objects = objects.clone();
        tokio::spawn(async move {
            let (seen, respond) = next(&mut handle).await;
            seen.assert_get("/apis/apps/v1/namespaces/tools/deployments/search");
            answer(respond, 200, &stored(&objects[0], "200"));
            let (seen, respond) = next(&mut handle).await;
            seen.assert_apply("/apis/apps/v1/namespaces/tools/deployments/search");
            // What the API server answers when another manager owns fields we set.
            answer(
                respond,
                409,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                    "message": "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.replicas\nconflicts with \"helm\" using apps/v1:\n- .spec.template.spec.containers[name=\"server\"].image",
                    "details": { "causes": [
                        { "reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using apps/v1",
                          "field": ".spec.replicas" },
                        { "reason": "FieldManagerConflict", "message": "conflict with \"helm\" using apps/v1",
                          "field": ".spec.template.spec.containers[name=\"server\"].image" },
                    ] },
                }),
            );
            handle
        })
    };

    let error = cluster
        .apply(&objects)
        .await
        .expect_err("a conflict is not taken over");
    let handle = server.await.expect("the API server saw what it expected");
    let message = error.to_string();
    let ApplyError::Conflict { object, conflicts } = error else {
        panic!("a conflict, got {message}")
    };
    assert_eq!(
        object,
        ObjectRef {
            kind: "Deployment".into(),
            namespace: Some("tools".into()),
            name: "search".into()
        }
    );
    assert_eq!(
        conflicts,
        [
            FieldConflict {
                manager: "kubectl-edit".into(),
                field: ".spec.replicas".into()
            },
            FieldConflict {
                manager: "helm".into(),
                field: ".spec.template.spec.containers[name=\"server\"].image".into()
            },
        ]
    );
    assert!(message.contains("Deployment tools/search"), "{message}");
    assert!(
        message.contains(".spec.replicas (manager `kubectl-edit`)"),
        "{message}"
    );
    assert!(
        message.contains("--force-conflicts"),
        "says how to take the fields over: {message}"
    );
    // The Service after the conflicting Deployment is not applied.
    assert_no_more_requests(cluster, handle).await;
}

#[tokio::test]
async fn mock_apply_forbidden_says_to_ask_for_the_right() {
    let (cluster, mut handle) = mock_cluster();
    let server = tokio::spawn(async move {
        let (seen, respond) = next(&mut handle).await;
        seen.assert_get("/api/v1/namespaces/tools/services/search");
        answer(respond, 404, &not_found());
        let (seen, respond) = next(&mut handle).await;
        seen.assert_apply("/api/v1/namespaces/tools/services/search");
        answer(
            respond,
            403,
            &json!({ "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                     "message": "services \"search\" is forbidden: User \"dev\" cannot patch resource \"services\" in API group \"\" in the namespace \"tools\"" }),
        );
    });
    let error = cluster.apply(&[service()]).await.expect_err("forbidden");
    server.await.unwrap();
    assert!(matches!(error, ApplyError::Forbidden { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("User \"dev\" cannot patch"), "{message}");
    assert!(message.contains("ask a cluster admin"), "{message}");
}

#[tokio::test]
async fn mock_apply_refuses_what_mcpfleet_does_not_render_before_sending_anything() {
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "github", "namespace": "tools" } });
    let mut unnamespaced = service();
    unnamespaced["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let nameless = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {} });
    for (objects, want) in [
        (
            vec![secret],
            "Secret tools/github: mcpfleet does not apply v1 Secret",
        ),
        (
            vec![unnamespaced],
            "Service search has no metadata.namespace",
        ),
        (vec![nameless], "object #1 has no metadata.name"),
    ] {
        let (cluster, handle) = mock_cluster();
        let error = cluster.apply(&objects).await.expect_err("refused");
        assert!(error.to_string().starts_with(want), "{error}");
        assert_no_more_requests(cluster, handle).await;
    }
}

/// A Deployment named `search` in `tools` at generation 2 wanting 2 replicas, with the
/// status counts given as (observedGeneration, replicas, updated, available).
fn rolling(
    resource_version: &str,
    (observed, total, updated, available): (i64, i32, i32, i32),
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "search", "namespace": "tools", "generation": 2, "resourceVersion": resource_version },
        "spec": { "replicas": 2, "selector": {}, "template": {} },
        "status": { "observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                    "availableReplicas": available },
    })
}

fn watch_events(events: &[(&str, Value)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, object) in events {
        serde_json::to_writer(&mut body, &json!({ "type": kind, "object": object })).unwrap();
        body.push(b'\n');
    }
    body
}

/// The watch mcpfleet sends: this one Deployment, from the version it just read, ending
/// before the deadline.
fn assert_watch(seen: &Seen, resource_version: &str) {
    seen.assert_get("/apis/apps/v1/namespaces/tools/deployments");
    assert_eq!(seen.param("watch"), Some("true"), "{seen:?}");
    assert_eq!(
        seen.param("resourceVersion"),
        Some(resource_version),
        "{seen:?}"
    );
    assert_eq!(
        seen.param("fieldSelector"),
        Some("metadata.name=search"),
        "{seen:?}"
    );
    let timeout: u64 = seen
        .param("timeoutSeconds")
        .expect("a bounded watch")
        .parse()
        .unwrap();
    assert!((1..=290).contains(&timeout), "{seen:?}");
}

#[tokio::test]
async fn mock_rollout_ready_after_observed_generation_catches_up() {
    let (cluster, mut handle) = mock_cluster();
    let server = tokio::spawn(async move {
        let (seen, respond) = next(&mut handle).await;
        seen.assert_get("/apis/apps/v1/namespaces/tools/deployments/search");
        // Every count matches, but for the previous spec: not ready yet.
        answer(respond, 200, &rolling("10", (1, 2, 2, 2)));
        let (seen, respond) = next(&mut handle).await;
        assert_watch(&seen, "10");
        answer_raw(
            respond,
            200,
            watch_events(&[
                ("MODIFIED", rolling("11", (2, 3, 1, 2))),
                ("MODIFIED", rolling("12", (2, 3, 2, 2))),
                ("MODIFIED", rolling("13", (2, 2, 2, 2))),
            ]),
        );
        handle
    });
    cluster
        .wait_rollout("search", "tools", Instant::now() + Duration::from_secs(30))
        .await
        .expect("ready once the controller observed generation 2 and the old replica left");
    let handle = server.await.unwrap();
    assert_no_more_requests(cluster, handle).await;
}

#[tokio::test]
async fn mock_rollout_that_never_becomes_available_times_out() {
    let (cluster, mut handle) = mock_cluster();
    let server = tokio::spawn(async move {
        let (seen, respond) = next(&mut handle).await;
        seen.assert_get("/apis/apps/v1/namespaces/tools/deployments/search");
        answer(respond, 200, &rolling("10", (2, 2, 2, 0)));
        let (seen, respond) = next(&mut handle).await;
        assert_watch(&seen, "10");
        // The watch stays open with nothing to say; hold it until the client gives up.
        (handle, respond)
    });
    let started = Instant::now();
    let deadline = started + Duration::from_millis(400);
    let error = cluster
        .wait_rollout("search", "tools", deadline)
        .await
        .expect_err("never available");
    assert!(Instant::now() >= deadline, "waited until the deadline");
    let RolloutError::TimedOut { last, .. } = &error else {
        panic!("timed out, got {error}")
    };
    assert_eq!(
        *last,
        RolloutState::Progressing {
            observed: true,
            desired: 2,
            updated: 2,
            available: 0,
            total: 2
        }
    );
    assert!(
        error
            .to_string()
            .contains("2 of 2 replicas updated, 0 available"),
        "{error}"
    );
    drop(server.await.unwrap());
}

#[tokio::test]
async fn mock_rollout_past_its_progress_deadline_fails_with_the_controllers_message() {
    let (cluster, mut handle) = mock_cluster();
    let server = tokio::spawn(async move {
        let (_, respond) = next(&mut handle).await;
        let mut failed = rolling("10", (2, 2, 1, 1));
        failed["status"]["conditions"] = json!([{ "type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"search-7d9f\" has timed out progressing." }]);
        answer(respond, 200, &failed);
        handle
    });
    let error = cluster
        .wait_rollout("search", "tools", Instant::now() + Duration::from_secs(30))
        .await
        .expect_err("failed");
    let handle = server.await.unwrap();
    assert!(matches!(error, RolloutError::Failed { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("search-7d9f\" has timed out progressing"),
        "{error}"
    );
    assert_no_more_requests(cluster, handle).await;
}

#[tokio::test]
async fn mock_rollout_reads_again_when_the_watch_version_is_too_old() {
    let (cluster, mut handle) = mock_cluster();
    let server = tokio::spawn(async move {
        let (_, respond) = next(&mut handle).await;
        answer(respond, 200, &rolling("10", (2, 2, 1, 1)));
        let (seen, respond) = next(&mut handle).await;
        assert_watch(&seen, "10");
        let gone = json!({ "kind": "Status", "status": "Failure", "reason": "Expired", "code": 410,
                           "message": "too old resource version: 10 (50)" });
        answer_raw(respond, 200, watch_events(&[("ERROR", gone)]));
        let (seen, respond) = next(&mut handle).await;
        seen.assert_get("/apis/apps/v1/namespaces/tools/deployments/search");
        answer(respond, 200, &rolling("60", (2, 2, 2, 2)));
        handle
    });
    cluster
        .wait_rollout("search", "tools", Instant::now() + Duration::from_secs(30))
        .await
        .expect("ready");
    let handle = server.await.unwrap();
    assert_no_more_requests(cluster, handle).await;
}

#[tokio::test]
async fn mock_rollout_of_a_missing_deployment_says_so() {
    let (cluster, mut handle) = mock_cluster();
    let server = tokio::spawn(async move {
        let (_, respond) = next(&mut handle).await;
        answer(respond, 404, &not_found());
    });
    let error = cluster
        .wait_rollout("search", "tools", Instant::now() + Duration::from_secs(30))
        .await
        .expect_err("missing");
    server.await.unwrap();
    assert!(matches!(error, RolloutError::NotFound { .. }), "{error:?}");
}

const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev
  cluster: { server: "http://127.0.0.1:PORT" }
contexts:
- name: dev
  context: { cluster: dev, user: dev, namespace: tools }
- name: prod-eu
  context: { cluster: dev, user: dev }
users:
- name: dev
  user: { token: not-a-real-token }
"#;

fn kubeconfig_file(dir: &TempDir, port: u16) -> std::path::PathBuf {
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, KUBECONFIG.replace("PORT", &port.to_string())).unwrap();
    path
}

#[tokio::test]
async fn connect_to_an_unknown_context_lists_the_ones_there() {
    let dir = TempDir::new("kube-unknown-context");
    let access = ClusterAccess::Kubeconfig {
        path: Some(kubeconfig_file(&dir, 6443)),
        context: Some("prod-us".into()),
    };
    let error = Cluster::connect(&access)
        .await
        .expect_err("no such context");
    assert!(
        matches!(error, ConnectError::UnknownContext { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "kubeconfig has no context `prod-us`; it has: dev, prod-eu"
    );
}

#[tokio::test]
async fn connect_without_a_kubeconfig_names_where_it_looked() {
    let dir = TempDir::new("kube-no-kubeconfig");
    let path = dir.path().join("missing");
    let error = Cluster::connect(&ClusterAccess::Kubeconfig {
        path: Some(path.clone()),
        context: None,
    })
    .await
    .expect_err("no kubeconfig");
    assert!(
        matches!(&error, ConnectError::NoKubeconfig { path: p } if *p == path),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("point KUBECONFIG at one"),
        "{error}"
    );
}

#[tokio::test]
async fn apply_to_an_unreachable_api_names_the_url_tried() {
    // A port that was free a moment ago: nothing listens there.
    let port = free_port();
    let dir = TempDir::new("kube-unreachable");
    let access = ClusterAccess::Kubeconfig {
        path: Some(kubeconfig_file(&dir, port)),
        context: Some("prod-eu".into()),
    };
    let cluster = Cluster::connect(&access)
        .await
        .expect("a kubeconfig is enough to connect");
    let error = cluster
        .apply(&[namespace()])
        .await
        .expect_err("nothing listens");
    let ApplyError::Api { source, .. } = &error else {
        panic!("an API error, got {error:?}")
    };
    let ApiError::Unreachable { url, .. } = source.as_ref() else {
        panic!("unreachable, got {error:?}")
    };
    assert_eq!(url, &format!("http://127.0.0.1:{port}/"));
    assert!(
        error.to_string().contains(&format!(
            "cannot reach the Kubernetes API at http://127.0.0.1:{port}/"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn mock_a_namespace_is_missing_only_when_the_api_server_says_not_found() {
    let (cluster, mut handle) = mock_cluster();
    let forbidden = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "Forbidden", "code": 403,
        "message": "namespaces \"tools\" is forbidden: User \"system:serviceaccount:tools:mcpfleet\" cannot get resource \"namespaces\" in API group \"\" at the cluster scope" });
    let server = tokio::spawn(async move {
        for (status, body) in [(200, namespace()), (404, not_found()), (403, forbidden)] {
            let (seen, respond) = next(&mut handle).await;
            seen.assert_get("/api/v1/namespaces/tools");
            answer(respond, status, &body);
        }
    });
    assert!(!cluster.namespace_missing("tools").await.unwrap());
    assert!(cluster.namespace_missing("tools").await.unwrap());
    // A Role in the namespace (the control plane's) cannot read Namespace objects: that
    // does not make the namespace missing.
    assert!(!cluster.namespace_missing("tools").await.unwrap());
    server.await.unwrap();
}

/// A cluster for preflight: answers each request by what it asks (access reviews run
/// concurrently, so not by order) and records what was asked.
#[derive(Clone)]
struct FakeCluster {
    minor: &'static str,
    namespace_exists: bool,
    /// (verb, resource) pairs the user may not do.
    denied: Vec<(&'static str, &'static str)>,
    /// Secret name → its `data`.
    secrets: Vec<(&'static str, Value)>,
    quotas: Vec<Value>,
}

impl Default for FakeCluster {
    fn default() -> Self {
        Self {
            minor: "35",
            namespace_exists: true,
            denied: Vec::new(),
            secrets: Vec::new(),
            quotas: Vec::new(),
        }
    }
}

impl FakeCluster {
    /// Serves until the client is dropped; returns each request as `METHOD path` (access
    /// reviews as `review VERB RESOURCE`).
    async fn serve(self, mut handle: Handle) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.unwrap();
            let path = parts.uri.path().to_owned();
            let (status, reply) = match (parts.method.as_str(), path.as_str()) {
                ("GET", "/version") => (
                    200,
                    json!({
                        "major": "1", "minor": self.minor, "gitVersion": format!("v1.{}.2", self.minor),
                        "gitCommit": "0", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                        "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64",
                    }),
                ),
                ("GET", "/api/v1/namespaces/tools") if self.namespace_exists => (
                    200,
                    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "tools" } }),
                ),
                ("GET", "/api/v1/namespaces/tools") => (404, not_found()),
                ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") => {
                    let mut review: Value = serde_json::from_slice(&body).unwrap();
                    let attributes = &review["spec"]["resourceAttributes"];
                    let verb = attributes["verb"].as_str().unwrap().to_owned();
                    let resource = attributes["resource"].as_str().unwrap().to_owned();
                    seen.push(format!("review {verb} {resource}"));
                    let allowed = !self
                        .denied
                        .iter()
                        .any(|(v, r)| *v == verb && *r == resource);
                    review["status"] = json!({ "allowed": allowed });
                    (201, review)
                }
                ("GET", "/api/v1/namespaces/tools/resourcequotas") => (
                    200,
                    json!({ "apiVersion": "v1", "kind": "ResourceQuotaList", "metadata": {}, "items": self.quotas }),
                ),
                ("GET", secret) if secret.starts_with("/api/v1/namespaces/tools/secrets/") => {
                    let name = secret.rsplit('/').next().unwrap();
                    match self.secrets.iter().find(|(n, _)| *n == name) {
                        Some((_, data)) => (
                            200,
                            json!({ "apiVersion": "v1", "kind": "Secret",
                            "metadata": { "name": name, "namespace": "tools" }, "data": data }),
                        ),
                        None => (404, not_found()),
                    }
                }
                (method, path) => panic!("unexpected request {method} {path}"),
            };
            if !path.ends_with("selfsubjectaccessreviews") {
                seen.push(format!("{} {path}", parts.method));
            }
            answer(respond, status, &reply);
        }
        seen
    }
}

/// The fleet's objects: its namespace, the control plane's Role (what it does at run
/// time), one Deployment (2 replicas of 500m/256Mi) and its Service.
fn fleet_objects() -> Vec<Value> {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": "mcpfleet", "namespace": "tools" },
        "rules": [
            { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete", "patch"] },
            { "apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"] },
            { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] },
        ],
    });
    let mut deployment = deployment();
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({ "requests": { "cpu": "500m", "memory": "256Mi" } });
    vec![namespace(), role, deployment, service()]
}

fn github_token() -> Vec<SecretKeyRef> {
    vec![SecretKeyRef {
        secret: "github".into(),
        key: "token".into(),
    }]
}

async fn preflight(fake: FakeCluster, secrets: &[SecretKeyRef]) -> (PreflightReport, Vec<String>) {
    let (cluster, handle) = mock_cluster();
    let server = tokio::spawn(fake.serve(handle));
    let report = cluster
        .preflight(&fleet_objects(), secrets, PodReach::PodIp)
        .await;
    drop(cluster);
    (
        report,
        server
            .await
            .expect("the fake cluster saw only what it knows"),
    )
}

fn lines(report: &PreflightReport) -> Vec<String> {
    report.checks.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn mock_preflight_passes_a_cluster_that_has_everything() {
    let fake = FakeCluster {
        secrets: vec![("github", json!({ "token": "c2VjcmV0LXZhbHVl" }))],
        quotas: vec![json!({ "metadata": { "name": "team" }, "status": {
            "hard": { "requests.cpu": "4", "requests.memory": "8Gi", "pods": "20" },
            "used": { "requests.cpu": "1", "requests.memory": "1Gi", "pods": "3" } } })],
        ..FakeCluster::default()
    };
    let (report, seen) = preflight(fake, &github_token()).await;
    assert!(report.passed(), "{:#?}", lines(&report));
    assert_eq!(report.server_version.as_deref(), Some("v1.35.2"));
    assert_eq!(
        lines(&report),
        [
            "ok: Kubernetes v1.35.2 (supported: 1.33 or newer)",
            "ok: namespace tools exists",
            "ok: you hold all 20 permissions apply and the runtime need",
            "ok: Secret tools/github has key `token`",
            "ok: ResourceQuota team leaves room for the fleet",
        ]
    );
    for review in [
        "review patch namespaces",
        "review create deployments",
        "review patch services",
        "review create pods",
        "review get secrets",
    ] {
        assert!(seen.iter().any(|s| s == review), "{review} in {seen:#?}");
    }
}

#[tokio::test]
async fn mock_preflight_reports_each_denied_permission_with_whom_to_ask() {
    let fake = FakeCluster {
        denied: vec![("patch", "deployments"), ("patch", "namespaces")],
        ..FakeCluster::default()
    };
    let (report, _) = preflight(fake, &[]).await;
    assert!(!report.passed());
    let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
    assert_eq!(
        failures,
        [
            "failed: cannot patch namespaces (cluster-wide): ask an admin for a ClusterRole and ClusterRoleBinding granting it",
            "failed: cannot patch deployments.apps in namespace tools: ask an admin for a Role and RoleBinding in tools granting it",
        ]
    );
}

#[tokio::test]
async fn mock_preflight_names_missing_secrets_and_keys_without_their_values() {
    let fake = FakeCluster {
        secrets: vec![(
            "github",
            json!({ "api-token": "c2VjcmV0LXZhbHVl", "user": "Ym90" }),
        )],
        ..FakeCluster::default()
    };
    let secrets = [
        SecretKeyRef {
            secret: "github".into(),
            key: "token".into(),
        },
        SecretKeyRef {
            secret: "search-secrets".into(),
            key: "api_key".into(),
        },
    ];
    let (report, seen) = preflight(fake, &secrets).await;
    let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
    assert_eq!(
        failures,
        [
            "failed: Secret tools/github has no key `token` (it has: api-token, user): add it",
            "failed: Secret tools/search-secrets does not exist: create it (`kubectl -n tools create secret generic search-secrets --from-literal=api_key=…`)",
        ]
    );
    let everything = format!("{report:?}");
    assert!(
        !everything.contains("c2VjcmV0LXZhbHVl") && !everything.contains("secret-value"),
        "no value: {everything}"
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.contains("/secrets/github"))
            .count(),
        1,
        "each Secret read once"
    );
}

#[tokio::test]
async fn mock_preflight_warns_when_a_resource_quota_leaves_no_room() {
    let fake = FakeCluster {
        quotas: vec![json!({ "metadata": { "name": "team" }, "status": {
            "hard": { "requests.cpu": "2", "requests.memory": "8Gi", "pods": "10" },
            "used": { "requests.cpu": "1500m", "requests.memory": "1Gi", "pods": "9" } } })],
        ..FakeCluster::default()
    };
    let (report, _) = preflight(fake, &[]).await;
    assert!(
        report.passed(),
        "a quota shortfall is a warning: {:#?}",
        lines(&report)
    );
    let quota = report
        .checks
        .iter()
        .find(|check| check.area == CheckArea::Quota)
        .unwrap();
    assert_eq!(quota.severity, Severity::Warning);
    assert!(
        quota.message.contains("pods 2 requested, 1 left of 10"),
        "{quota}"
    );
    assert!(
        quota
            .message
            .contains("requests.cpu 1 requested, 500m left of 2"),
        "{quota}"
    );
    assert!(!quota.message.contains("memory"), "memory fits: {quota}");
}

#[tokio::test]
async fn mock_preflight_refuses_a_cluster_older_than_1_33() {
    let (report, _) = preflight(
        FakeCluster {
            minor: "32",
            ..FakeCluster::default()
        },
        &[],
    )
    .await;
    let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
    assert_eq!(
        failures,
        [
            "failed: Kubernetes v1.32.2 is older than mcpfleet supports (1.33 or newer): upgrade the cluster or use another context"
        ]
    );
}

#[tokio::test]
async fn mock_preflight_a_missing_namespace_you_cannot_create_is_a_failure() {
    let fake = FakeCluster {
        namespace_exists: false,
        denied: vec![("create", "namespaces")],
        ..FakeCluster::default()
    };
    let (report, seen) = preflight(fake, &github_token()).await;
    let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
    assert_eq!(
        failures,
        [
            "failed: namespace tools does not exist and you cannot create namespaces: ask a cluster admin to create it (`kubectl create namespace tools`)",
            "failed: Secret tools/github (key `token`) cannot exist before its namespace: create the namespace, then the Secret (`kubectl -n tools create secret generic github --from-literal=token=…`)",
        ]
    );
    assert!(
        !seen.iter().any(|s| s.contains("resourcequotas")),
        "no quota in a namespace that does not exist"
    );
}

#[tokio::test]
async fn preflight_of_an_unreachable_api_is_one_failure_naming_the_url() {
    let port = free_port();
    let dir = TempDir::new("kube-preflight-unreachable");
    let access = ClusterAccess::Kubeconfig {
        path: Some(kubeconfig_file(&dir, port)),
        context: None,
    };
    let cluster = Cluster::connect(&access).await.unwrap();
    let report = cluster
        .preflight(&fleet_objects(), &github_token(), PodReach::PodIp)
        .await;
    assert_eq!(report.checks.len(), 1, "{report:#?}");
    assert!(
        report.checks[0].to_string().starts_with(&format!(
            "failed: cannot reach the Kubernetes API at http://127.0.0.1:{port}/"
        )),
        "{}",
        report.checks[0]
    );
}

#[test]
fn the_secrets_a_rendered_fleet_reads_are_the_ones_preflight_checks() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes.yaml");
    let text = std::fs::read_to_string(example).unwrap();
    let fleet = fleet_spec::load_str(
        "fleet.yaml",
        &text,
        "/fleet".into(),
        &fleet_spec::LoadOptions::default(),
    )
    .into_valid()
    .unwrap_or_else(|errors| panic!("{errors:#?}"));
    let objects =
        fleet_manifests::render(&fleet, &fleet_manifests::Options::new(text.as_str())).unwrap();
    let found: Vec<(String, String)> = fleet_runtime_kube::referenced_secrets(&objects)
        .into_iter()
        .map(|r| (r.secret, r.key))
        .collect();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(s, k)| ((*s).to_owned(), (*k).to_owned()))
            .collect()
    };
    // The server's secret file, the control plane's environment (the remote server's
    // header), the Ingress's TLS certificate.
    assert_eq!(
        found,
        pairs(&[
            ("github", "token"),
            ("mcp-tls", "tls.crt"),
            ("tools-secrets", "docs_token")
        ])
    );
}
