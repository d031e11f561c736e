//! Fuzz target: the pod cache's slim decoder. Bytes are decoded as one pod, as a pod list and as a
//! watch event (what kube's watcher reads), and every decoded pod goes through the slim conversion
//! the cache stores, with its workload and uid resolved the way the store indexes them.
#![no_main]

use kube::core::WatchEvent;
use lazyscale_podcache::intern::Interner;
use lazyscale_podcache::slim::{wire_uid, wire_workload};
use lazyscale_podcache::{PodWire, SlimPod, wire};
use libfuzzer_sys::fuzz_target;

fn slim(pod: &PodWire, interner: &mut Interner) {
    let workload = wire_workload(pod).map(|w| w.to_key());
    let uid = wire_uid(pod);
    if let Ok(s) = SlimPod::from_wire(pod, interner) {
        assert_eq!(s.uid(), uid, "the slim pod keeps the uid the store indexes");
        assert_eq!(
            s.workload(),
            workload.as_ref(),
            "the slim pod keeps the wire workload"
        );
        let _ = (s.name(), s.namespace(), s.owner(), s.template_hash(), s.node());
        let _ = (s.phase(), s.is_ready(), s.is_terminating());
        let _ = (s.resize_pending(), s.resize_in_progress());
        for c in s.containers() {
            let _ = s.container(&c.name);
        }
        let _ = s.container_states();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut interner = Interner::new();
    if let Ok(pod) = wire::decode_pod(data) {
        slim(&pod, &mut interner);
    }
    if let Ok(pods) = wire::decode_pod_list(data) {
        for pod in &pods {
            slim(pod, &mut interner);
        }
    }
    if let Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod) | WatchEvent::Deleted(pod)) =
        serde_json::from_slice::<WatchEvent<PodWire>>(data)
    {
        slim(&pod, &mut interner);
    }
    interner.sweep();
});
