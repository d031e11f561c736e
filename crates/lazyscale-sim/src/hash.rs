//! Kubernetes' naming and hashing conventions: the FNV-1a based `pod-template-hash` and
//! `controller-revision-hash` values, encoded with the same "safe" alphabet that the API server's
//! name generator uses for `generateName` suffixes.
//!
//! Kubernetes hashes a deep print of the Go struct; here the canonical JSON serialization of the
//! k8s-openapi type is hashed instead, so values have the same shape (decimal FNV-32a digits mapped
//! onto `bcdfghjklmnpqrstvwxz2456789`) and change exactly when the template changes.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The alphabet of generated name suffixes and safe-encoded hashes (no vowels, no confusable digits).
pub const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// 32-bit FNV-1a over `data`.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Maps every byte of `s` onto [`ALPHANUMS`], as `k8s.io/apimachinery/pkg/util/rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// Hashes serialized JSON plus an optional collision count (little-endian, as Kubernetes appends it).
fn hash_json(json: &[u8], collision_count: Option<i32>) -> String {
    let mut data = json.to_vec();
    if let Some(c) = collision_count {
        data.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&data).to_string())
}

/// The `pod-template-hash` of a Deployment's pod template (the template must not carry the
/// `pod-template-hash` label itself).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    hash_json(&json, collision_count)
}

/// The hash part of a StatefulSet's `controller-revision-hash` (the label value is `<name>-<hash>`),
/// computed over the ControllerRevision data.
pub fn revision_hash(data: &serde_json::Value, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(data).unwrap_or_default();
    hash_json(&json, collision_count)
}

/// A small deterministic PRNG (SplitMix64) used for seeded noise and generated names.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The SplitMix64 finalizer: a good 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic value in `[0, 1)` for a seed and a list of integer keys.
pub fn unit_noise(seed: u64, keys: &[u64]) -> f64 {
    let mut h = mix64(seed ^ 0x5151_5151_5151_5151);
    for k in keys {
        h = mix64(h ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// `n` characters from [`ALPHANUMS`], like the API server's `generateName` suffix.
pub fn random_suffix(rng: &mut SplitMix64, n: usize) -> String {
    (0..n)
        .map(|_| char::from(ALPHANUMS[(rng.next_u64() % ALPHANUMS.len() as u64) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encode_uses_the_k8s_alphabet() {
        // '0' is byte 48, 48 % 27 = 21 -> '4'; '1' -> 49 % 27 = 22 -> '5'.
        assert_eq!(safe_encode("01"), "45");
        let h = pod_template_hash(&PodTemplateSpec::default(), None);
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)));
    }

    #[test]
    fn template_hash_changes_with_template_and_collisions() {
        let a = PodTemplateSpec::default();
        let b = PodTemplateSpec {
            metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: Some([("app".to_string(), "x".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_ne!(pod_template_hash(&a, None), pod_template_hash(&b, None));
        assert_eq!(pod_template_hash(&b, None), pod_template_hash(&b.clone(), None));
        assert_ne!(pod_template_hash(&a, None), pod_template_hash(&a, Some(1)));
    }

    #[test]
    fn noise_is_deterministic() {
        assert_eq!(unit_noise(7, &[1, 2]), unit_noise(7, &[1, 2]));
        assert_ne!(unit_noise(7, &[1, 2]), unit_noise(8, &[1, 2]));
        let mut r = SplitMix64::new(1);
        let s = random_suffix(&mut r, 5);
        assert_eq!(s.len(), 5);
    }
}
