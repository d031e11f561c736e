//! The events recorder on the real API server: the first occurrence of an event creates an
//! `events.k8s.io/v1` Event with the reporter and the regarded object; a repeat bumps its series instead
//! of creating another; a different reason or note is another Event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Api;
use kube::api::ListParams;
use lazyscale_controller::events::{Event, EventType, Recorder, Reporter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_is_one_event_with_a_series() {
    lazyscale_testenv::init_tracing();
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "lazyscale-test".into(),
            instance: Some("pod-0".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("datadoghq.com/v1alpha2".into()),
        kind: Some("DatadogPodAutoscaler".into()),
        name: Some("web".into()),
        namespace: Some(ns.clone()),
        ..Default::default()
    };
    let ev = |reason: &str| Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(format!("{reason} happened")),
        action: "Scale".into(),
        secondary: None,
    };
    for _ in 0..3 {
        recorder.publish(&ev("FailedScale"), &reference).await.unwrap();
    }
    recorder.publish(&ev("Other"), &reference).await.unwrap();
    let mut new_note = ev("FailedScale");
    new_note.note = Some("FailedScale happened again, differently".into());
    recorder.publish(&new_note, &reference).await.unwrap();
    assert_eq!(recorder.series(), 3);
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let list = events.list(&ListParams::default()).await.unwrap().items;
    let ours: Vec<&K8sEvent> = list
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("lazyscale-test"))
        .collect();
    assert_eq!(ours.len(), 3, "{ours:#?}");
    let failed = ours
        .iter()
        .find(|e| e.note.as_deref() == Some("FailedScale happened"))
        .expect("the FailedScale event");
    assert_eq!(failed.series.as_ref().map(|s| s.count), Some(3), "{failed:#?}");
    assert_eq!(failed.note.as_deref(), Some("FailedScale happened"));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.reporting_instance.as_deref(), Some("pod-0"));
    assert_eq!(
        failed.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("web")
    );
    let other = ours
        .iter()
        .find(|e| e.reason.as_deref() == Some("Other"))
        .expect("the Other event");
    assert!(other.series.is_none(), "a single occurrence has no series");
    assert!(
        ours.iter().any(
            |e| e.note.as_deref() == Some("FailedScale happened again, differently") && e.series.is_none()
        ),
        "another note is another event: {ours:#?}"
    );
}
