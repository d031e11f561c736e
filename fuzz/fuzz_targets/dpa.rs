//! Fuzz target: a DatadogPodAutoscaler as the agent reads it from the API server (JSON), then what the
//! agent runs on every DPA it sees: validation, the horizontal policy and objectives, the vertical
//! mode, constraints and the webhook's view. Invariants: no panic; what decodes re-encodes and decodes
//! to the same object; validation is a function of the object.
#![no_main]

use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_controller::horizontal;
use lazyscale_controller::validate::{SelfTarget, validate};
use lazyscale_vertical::{Autoscaler, apply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dpa) = serde_json::from_slice::<DatadogPodAutoscaler>(data) else {
        return;
    };
    let me: SelfTarget = ("lazyscale".into(), "Deployment".into(), "lazyscale".into());
    let verdict = validate(&dpa, Some(&me));
    let _ = validate(&dpa, None);
    let _ = horizontal::policy(&dpa.spec);
    let _ = horizontal::objectives(&dpa.spec);
    let _ = (
        apply::paused(&dpa),
        apply::mode(&dpa),
        apply::horizontal_position(&dpa),
    );
    let _ = apply::effective_constraints(&dpa);
    for burstable in [false, true] {
        let _ = Autoscaler::from_dpa(&dpa, burstable);
    }

    let json = serde_json::to_vec(&dpa).expect("a decoded DPA encodes");
    let back: DatadogPodAutoscaler = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "a re-encoded DPA decodes: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back, dpa, "decode(encode(dpa)) == dpa");
    assert_eq!(validate(&back, Some(&me)), verdict);
});
