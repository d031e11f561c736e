//! Fuzz target: a DatadogPodAutoscalerClusterProfile, decoded both ways the agent does (typed, and its
//! `spec.template` out of a dynamic object as the profile controller reads it), validated, hashed and
//! turned into the DPA it generates for a workload. Invariants: no panic; the generated DPA validates
//! exactly when the profile's template does; the template hash is stable.
#![no_main]

use lazyscale_api::{DatadogPodAutoscalerClusterProfile, DatadogPodAutoscalerTemplate};
use lazyscale_controller::profiles::plan::{
    PROFILE_KINDS, Profile, Workload, desired_dpa, template_hash, valid_profile_name,
};
use lazyscale_controller::validate::validate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<DatadogPodAutoscalerClusterProfile>(data);
    let Ok(object) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("p");
    let _ = valid_profile_name(name);
    let template = object
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let Ok(template) = serde_json::from_value::<DatadogPodAutoscalerTemplate>(template) else {
        return;
    };
    let profile = Profile::new(template.clone());
    let hash = template_hash(&template);
    assert_eq!(hash, template_hash(&template.clone()));
    for kind in PROFILE_KINDS {
        let workload = Workload {
            kind,
            namespace: "shop".into(),
            name: "web".into(),
            uid: Some("5f0c6a8e-2b1d-4c3e-9f7a-1d2e3f4a5b6c".into()),
            label: Some(name.to_owned()),
        };
        let dpa = desired_dpa(name, &template, &hash, &workload);
        assert_eq!(
            validate(&dpa, None).is_ok(),
            profile.template.is_ok(),
            "a generated DPA validates exactly when its profile's template does"
        );
    }
});
