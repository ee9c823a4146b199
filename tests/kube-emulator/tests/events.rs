//! Events are one resource served by two APIs, as on a real cluster: what
//! kube-runtime's `Recorder` writes through `events.k8s.io/v1` is a core
//! `v1` Event (`kubectl describe` lists it), what the emulated kubelet
//! writes through `v1` is listed by `events.k8s.io/v1`, watches on either
//! see writes through the other, and each API validates and selects as
//! kube-apiserver's does.

mod api_support;

use std::time::Duration;

use api_support::{api_error, cluster, from_json, namespace, TestCluster};
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::{self as recorder, EventType, Recorder, Reporter};
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;

const NAMESPACE: &str = "moves";
const CONTROLLER: &str = "mover.io/orchestrator";

/// A cluster with the namespace the tests write in.
async fn cluster_with_namespace() -> (TestCluster, kube::Client) {
    let test = cluster().await;
    let client = test.client();
    namespace(&client, NAMESPACE).await;
    (test, client)
}

/// A small custom resource, `Widget` of `example.io/v1`, established.
async fn widgets(client: &kube::Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": {"name": "widgets.example.io"},
        "spec": {
            "group": "example.io", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }));
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    kube::runtime::wait::await_condition(
        crds,
        "widgets.example.io",
        kube::runtime::conditions::is_crd_established(),
    )
    .await
    .expect("CRD established");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("example.io", "v1", "Widget"));
    Api::namespaced_with(client.clone(), NAMESPACE, &resource)
}

/// The core Events about the object named `name`, selected the way
/// `kubectl describe` selects them.
async fn core_events_about(
    client: &kube::Client,
    name: &str,
    kind: &str,
    uid: &str,
) -> Vec<CoreEvent> {
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = format!(
        "involvedObject.name={name},involvedObject.namespace={NAMESPACE},involvedObject.kind={kind},involvedObject.uid={uid}"
    );
    events
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("list core events")
        .items
}

#[tokio::test]
async fn a_recorder_event_about_a_custom_resource_is_a_core_event_kubectl_describes() {
    let (test, client) = cluster_with_namespace().await;
    let widgets = widgets(&client).await;
    let widget: DynamicObject = from_json(
        json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {}}),
    );
    let widget = widgets
        .create(&PostParams::default(), &widget)
        .await
        .expect("create widget");
    let uid = widget.uid().expect("a uid");
    let reference = widget.object_ref(&ApiResource::from_gvk(&GroupVersionKind::gvk(
        "example.io",
        "v1",
        "Widget",
    )));
    let reporter = Reporter {
        controller: CONTROLLER.into(),
        instance: Some("orchestrator-0".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let event = recorder::Event {
        type_: EventType::Warning,
        reason: "CopyFailed".into(),
        note: Some("volume data could not be copied".into()),
        action: "Migrate".into(),
        secondary: None,
    };
    let publish = || async {
        recorder
            .publish(&event, &reference)
            .await
            .expect("publish an event");
        core_events_about(&client, "w1", "Widget", &uid).await
    };
    let found = publish().await;
    assert_eq!(found.len(), 1, "{found:?}");
    let core = &found[0];
    assert_eq!(
        core.message.as_deref(),
        Some("volume data could not be copied")
    );
    assert_eq!(core.reason.as_deref(), Some("CopyFailed"));
    assert_eq!(core.type_.as_deref(), Some("Warning"));
    assert_eq!(core.action.as_deref(), Some("Migrate"));
    assert_eq!(core.reporting_component.as_deref(), Some(CONTROLLER));
    assert_eq!(core.reporting_instance.as_deref(), Some("orchestrator-0"));
    assert_eq!(core.involved_object.kind.as_deref(), Some("Widget"));
    assert_eq!(
        core.involved_object.api_version.as_deref(),
        Some("example.io/v1")
    );
    assert!(core.event_time.is_some());
    assert!(core.count.is_none() && core.first_timestamp.is_none());
    assert!(core.source.as_ref().is_none_or(|s| s.component.is_none()));
    let by_source: Api<CoreEvent> = Api::namespaced(client.clone(), NAMESPACE);
    let by_source = by_source
        .list(&ListParams::default().fields(&format!(
            "source={CONTROLLER},reportingComponent={CONTROLLER}"
        )))
        .await
        .expect("list by source");
    assert_eq!(
        by_source.items.len(),
        1,
        "source falls back to the reporting controller"
    );

    // The same object through both APIs.
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let v1 = events
        .get(&core.name_any())
        .await
        .expect("events.k8s.io get");
    assert_eq!(v1.metadata.uid, core.metadata.uid);
    assert_eq!(v1.metadata.resource_version, core.metadata.resource_version);
    assert_eq!(v1.note, core.message);
    assert_eq!(
        v1.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        Some(uid.as_str())
    );

    // A repeat is a series, patched through events.k8s.io and seen in core.
    let found = publish().await;
    assert_eq!(found.len(), 1, "a repeat updates the event: {found:?}");
    let series = found[0].series.as_ref().expect("a series");
    assert_eq!(series.count, Some(2));
    assert!(series.last_observed_time.is_some());

    // kubectl describe lists it in the Events section; kubectl get shows
    // it through both APIs.
    let kubeconfig = test.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, test.cluster.kubeconfig()).expect("kubeconfig");
    let described = kubectl(&kubeconfig, &["describe", "widget", "w1"]).await;
    let events_section = described
        .split_once("Events:")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no Events section: {described}"));
    for expected in [
        "Warning",
        "CopyFailed",
        "(x2 over",
        CONTROLLER,
        "volume data could not be copied",
    ] {
        assert!(
            events_section.contains(expected),
            "{expected:?} not in: {described}"
        );
    }
    for resource in ["events", "events.v1.events.k8s.io"] {
        let listed = kubectl(&kubeconfig, &["get", resource]).await;
        for expected in ["CopyFailed", "widget/w1", "volume data could not be copied"] {
            assert!(listed.contains(expected), "{expected:?} not in: {listed}");
        }
    }
}

/// What `kubectl -n NAMESPACE args` prints, failing the test unless it
/// succeeds.
async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", NAMESPACE])
        .args(args)
        .output()
        .await
        .expect("running kubectl (is it installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A pod to record kubelet events about (no kubelet runs it here).
async fn pod(client: &kube::Client, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    pods.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        })),
    )
    .await
    .expect("create pod")
}

#[tokio::test]
async fn a_kubelet_core_event_is_listed_by_events_v1() {
    let (_test, client) = cluster_with_namespace().await;
    let pod = pod(&client, "web").await;
    kube_emulator::events::record_container(
        &client,
        kube_emulator::events::Reporter::on_host("kubelet", "node-1"),
        &pod,
        "spec.containers{app}".into(),
        kube_emulator::events::Type::Normal,
        "Pulled",
        "Container image \"busybox\" already present on machine",
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let listed = events
        .list(&ListParams::default().fields("regarding.name=web,regarding.kind=Pod,reason=Pulled"))
        .await
        .expect("list events.k8s.io")
        .items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let event = &listed[0];
    assert_eq!(
        event.note.as_deref(),
        Some("Container image \"busybox\" already present on machine")
    );
    let regarding = event.regarding.as_ref().expect("regarding");
    assert_eq!(
        regarding.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    assert_eq!(regarding.uid, pod.metadata.uid);
    let source = event.deprecated_source.as_ref().expect("deprecatedSource");
    assert_eq!(source.component.as_deref(), Some("kubelet"));
    assert_eq!(source.host.as_deref(), Some("node-1"));
    assert_eq!(event.deprecated_count, Some(1));
    assert!(
        event.deprecated_first_timestamp.is_some() && event.deprecated_last_timestamp.is_some()
    );
    assert_eq!(event.reporting_controller.as_deref(), Some("kubelet"));
    assert_eq!(event.reporting_instance.as_deref(), Some("node-1"));
    let by_controller = events
        .list(&ListParams::default().fields("reportingController=kubelet,source=kubelet"))
        .await
        .expect("list by reporting controller");
    assert_eq!(by_controller.items.len(), 1);

    // Each API accepts its own field labels only, as the real server.
    let refused = api_error(
        events
            .list(&ListParams::default().fields("involvedObject.name=web"))
            .await,
    );
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (400, "field label not supported: involvedObject.name")
    );
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), NAMESPACE);
    let refused = api_error(
        core.list(&ListParams::default().fields("regarding.name=web"))
            .await,
    );
    assert_eq!(refused.code, 400);
    let refused = api_error(core.list(&ListParams::default().fields("message=x")).await);
    assert_eq!(refused.message, "field label not supported: message");
}

/// The next event of a watch, within a few seconds.
async fn next<K>(
    stream: &mut (impl futures_util::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("a watch event in time")
        .expect("a good watch")
        .expect("an open watch")
}

#[tokio::test]
async fn a_watch_on_one_event_api_sees_writes_through_the_other() {
    let (_test, client) = cluster_with_namespace().await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), NAMESPACE);
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let core_watch = core
        .watch(
            &WatchParams::default().fields("involvedObject.name=db"),
            "0",
        )
        .await
        .expect("watch core events");
    let v1_watch = events
        .watch(&WatchParams::default().fields("regarding.name=db"), "0")
        .await
        .expect("watch events.k8s.io events");
    let (mut core_watch, mut v1_watch) = (core_watch.boxed(), v1_watch.boxed());

    // Written through events.k8s.io, seen by the core watch.
    let note: Event = from_json(json!({
        "metadata": {"name": "db.1"},
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "db", "namespace": NAMESPACE},
        "eventTime": "2026-12-07T08:00:00.000000Z",
        "reportingController": CONTROLLER, "reportingInstance": "o-1",
        "action": "Migrate", "reason": "Started", "type": "Normal", "note": "started",
    }));
    let created = events
        .create(&PostParams::default(), &note)
        .await
        .expect("create through events.k8s.io");
    match next(&mut core_watch).await {
        WatchEvent::Added(event) => {
            assert_eq!(event.message.as_deref(), Some("started"));
            assert_eq!(event.involved_object.name.as_deref(), Some("db"));
            assert_eq!(
                event.metadata.resource_version,
                created.metadata.resource_version
            );
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    assert!(matches!(next(&mut v1_watch).await, WatchEvent::Added(_)));

    // Written through core, seen by the events.k8s.io watch.
    let legacy: CoreEvent = from_json(json!({
        "metadata": {"name": "db.2"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "db", "namespace": NAMESPACE},
        "source": {"component": "kubelet"}, "count": 1,
        "reason": "Killing", "type": "Normal", "message": "Stopping container db",
    }));
    core.create(&PostParams::default(), &legacy)
        .await
        .expect("create through core");
    match next(&mut v1_watch).await {
        WatchEvent::Added(event) => {
            assert_eq!(event.note.as_deref(), Some("Stopping container db"));
            assert_eq!(event.deprecated_count, Some(1));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    assert!(matches!(next(&mut core_watch).await, WatchEvent::Added(_)));

    // A label patched through core shows through events.k8s.io; a delete
    // through events.k8s.io ends it in core.
    core.patch(
        "db.1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"step": "dvm"}}})),
    )
    .await
    .expect("patch through core");
    match next(&mut v1_watch).await {
        WatchEvent::Modified(event) => {
            assert_eq!(event.labels().get("step").map(String::as_str), Some("dvm"));
            assert_eq!(event.note.as_deref(), Some("started"));
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    assert!(matches!(
        next(&mut core_watch).await,
        WatchEvent::Modified(_)
    ));
    let labelled = events
        .list(&ListParams::default().labels("step=dvm"))
        .await
        .expect("list by label");
    assert_eq!(labelled.items.len(), 1);
    events
        .delete("db.1", &DeleteParams::default())
        .await
        .expect("delete through events.k8s.io");
    match next(&mut core_watch).await {
        WatchEvent::Deleted(event) => assert_eq!(event.name_any(), "db.1"),
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert_eq!(api_error(core.get("db.1").await).code, 404);
    match next(&mut v1_watch).await {
        WatchEvent::Deleted(event) => assert_eq!(event.name_any(), "db.1"),
        other => panic!("expected DELETED, got {other:?}"),
    }
}

#[tokio::test]
async fn events_v1_writes_are_validated_as_kube_apiserver_does() {
    let (_test, client) = cluster_with_namespace().await;
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), NAMESPACE);

    // An old-style event: fine through core, not through events.k8s.io.
    let old_style = json!({
        "metadata": {"name": "old.1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": NAMESPACE},
        "reason": "Pulled", "type": "Normal", "message": "pulled",
        "source": {"component": "kubelet"}, "count": 1,
    });
    core.create(&PostParams::default(), &from_json(old_style))
        .await
        .expect("a legacy event through core");
    let refused = api_error(
        events
            .create(
                &PostParams::default(),
                &from_json(json!({
                    "metadata": {"name": "old.2"},
                    "regarding": {"kind": "Pod", "name": "p", "namespace": NAMESPACE},
                    "reason": "Pulled", "type": "Normal", "note": "pulled",
                    "deprecatedSource": {"component": "kubelet"}, "deprecatedCount": 1,
                })),
            )
            .await,
    );
    assert_eq!(refused.code, 422);
    for expected in [
        "eventTime: Required value",
        "count: Invalid value",
        "source: Invalid value",
    ] {
        assert!(
            refused.message.contains(expected),
            "{expected:?} not in {:?}",
            refused.message
        );
    }

    // With eventTime set, the reporter and a short note are required.
    let refused = api_error(
        events
            .create(
                &PostParams::default(),
                &from_json(json!({
                    "metadata": {"name": "long.1"},
                    "regarding": {"kind": "Pod", "name": "p", "namespace": NAMESPACE},
                    "eventTime": "2026-12-07T08:00:00.000000Z",
                    "action": "Migrate", "reason": "Started", "type": "Normal",
                    "note": "x".repeat(1025),
                })),
            )
            .await,
    );
    assert_eq!(refused.code, 422);
    for expected in [
        "Event.events.k8s.io \"long.1\" is invalid",
        "reportingController: Required value",
        "reportingInstance: Required value",
        "message: Invalid value: \"\": can have at most 1024 characters",
    ] {
        assert!(
            refused.message.contains(expected),
            "{expected:?} not in {:?}",
            refused.message
        );
    }
    assert_eq!(api_error(core.get("long.1").await).code, 404);

    // Through events.k8s.io, an event may change its series only.
    let good: Event = from_json(json!({
        "metadata": {"name": "good.1"},
        "regarding": {"kind": "Pod", "name": "p", "namespace": NAMESPACE},
        "eventTime": "2026-12-07T08:00:00.000000Z",
        "reportingController": CONTROLLER, "reportingInstance": "o-1",
        "action": "Migrate", "reason": "Started", "type": "Normal", "note": "ok",
    }));
    events
        .create(&PostParams::default(), &good)
        .await
        .expect("a valid events.k8s.io event");
    let refused = api_error(
        events
            .patch(
                "good.1",
                &PatchParams::default(),
                &Patch::Merge(json!({"note": "changed"})),
            )
            .await,
    );
    assert_eq!(refused.code, 422);
    assert!(
        refused
            .message
            .contains("message: Invalid value: \"changed\": field is immutable"),
        "{}",
        refused.message
    );
    events
        .patch(
            "good.1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"series": {"count": 2, "lastObservedTime": "2026-12-07T08:01:00.000000Z"}}),
            ),
        )
        .await
        .expect("a series update");
}

#[tokio::test]
async fn server_side_apply_through_events_v1_writes_the_core_event() {
    let (_test, client) = cluster_with_namespace().await;
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let applied = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "applied.1", "labels": {"by": "apply"}},
        "regarding": {"kind": "Pod", "name": "p", "namespace": NAMESPACE},
        "eventTime": "2026-12-07T08:00:00.000000Z",
        "reportingController": CONTROLLER, "reportingInstance": "o-1",
        "action": "Migrate", "reason": "Applied", "type": "Normal", "note": "applied",
    });
    let params = PatchParams::apply("events-test");
    events
        .patch("applied.1", &params, &Patch::Apply(&applied))
        .await
        .expect("create by apply");
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), NAMESPACE);
    let stored = core.get("applied.1").await.expect("the core event");
    assert_eq!(stored.message.as_deref(), Some("applied"));
    assert_eq!(stored.reporting_component.as_deref(), Some(CONTROLLER));
    assert_eq!(stored.involved_object.name.as_deref(), Some("p"));
    // Applying again without the label removes it, and only it.
    let mut again = applied.clone();
    again["metadata"]["labels"] = json!({});
    events
        .patch("applied.1", &params, &Patch::Apply(&again))
        .await
        .expect("apply again");
    let stored = core.get("applied.1").await.expect("the core event");
    assert!(stored.labels().get("by").is_none(), "{stored:?}");
    assert_eq!(stored.message.as_deref(), Some("applied"));
}
