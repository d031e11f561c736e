//! Fuzz target: the webhook's fast path (no mutator installed, the stack is down). Any body either
//! gets HTTP 400 or "allowed" without a patch for the request's own uid; nothing panics.
#![no_main]

use lazyscale::telemetry::WebhookPath;
use lazyscale::webhook::{Decision, decide};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decide(data, None) {
        Decision::BadRequest(message) => assert!(!message.is_empty()),
        Decision::Respond { body, path } => {
            assert_eq!(path, WebhookPath::Fast);
            let response = &body["response"];
            assert_eq!(response["allowed"], serde_json::Value::Bool(true));
            assert!(response.get("patch").is_none(), "the fast path never patches");
            // The uid answered is the request's (a JSON parse of the same body sees the same one).
            if let Ok(review) = serde_json::from_slice::<serde_json::Value>(data) {
                assert_eq!(review.pointer("/request/uid"), response.get("uid"));
            }
        }
    }
});
