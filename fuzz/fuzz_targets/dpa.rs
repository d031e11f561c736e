//! Fuzz target: a DatadogPodAutoscaler as the agent reads it from the API server (JSON), decoded the way
//! the DPA watch decodes it (`validate::decode`, which names the first field that does not fit), then
//! what the agent runs on every DPA it sees: validation, the horizontal policy and objectives, the
//! vertical mode, constraints and the webhook's view. Invariants: no panic; `decode` accepts exactly what
//! the plain typed decoding accepts, and names a field when it refuses; what decodes re-encodes and
//! decodes to the same object; validation is a function of the object.
#![no_main]

use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_controller::horizontal;
use lazyscale_controller::validate::{SelfTarget, decode, validate};
use lazyscale_vertical::{Autoscaler, apply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let plain = serde_json::from_value::<DatadogPodAutoscaler>(object.clone());
    let dpa = match decode(&object) {
        Ok(dpa) => {
            assert_eq!(plain.ok().as_ref(), Some(&dpa), "decode agrees with the typed decoding");
            dpa
        }
        Err(undecodable) => {
            assert!(plain.is_err(), "decode refused what the typed decoding accepts: {undecodable:?}");
            assert!(!undecodable.field.is_empty(), "a refusal names a field");
            return;
        }
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
