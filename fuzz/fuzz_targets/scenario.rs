//! Fuzz target: simulator scenario files (`lazyscale_sim::scenario::parse`: YAML with locations, then
//! the scenario's own validation), and the objects a parsed scenario creates. Invariants: no panic;
//! every workload is a Deployment or a StatefulSet; every workload an event names resolves.
#![no_main]

use lazyscale_sim::WorkloadKind;
use lazyscale_sim::scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sc) = scenario::parse(text, "fuzz.yaml") else {
        return;
    };
    for w in &sc.workloads {
        match w.value.kind {
            WorkloadKind::Deployment => drop(scenario::deployment_of(&w.value)),
            WorkloadKind::StatefulSet => drop(scenario::statefulset_of(&w.value)),
            other => panic!("a parsed scenario declares a {other} workload"),
        }
    }
    for ev in &sc.events {
        let e = &ev.value;
        let named = [
            e.set_load.as_ref().map(|a| a.workload.as_str()),
            e.scale.as_ref().map(|a| a.workload.as_str()),
            e.edit_template.as_ref().map(|a| a.workload.as_str()),
            e.delete_pod.as_ref().map(|a| a.workload.as_str()),
            e.evict_pod.as_ref().map(|a| a.workload.as_str()),
            e.set_resize.as_ref().map(|a| a.workload.as_str()),
        ];
        for w in named.into_iter().flatten() {
            assert!(
                scenario::resolve_workload(&sc, w).is_ok(),
                "{w:?} resolved at parse time"
            );
        }
    }
});
