//! Approximate deep heap size of API objects, for the agent's memory breakdown
//! (`lazyscale_memory_bytes`): what a value owns on the heap, estimated by walking its serde
//! serialization, so every type of the API (and of k8s-openapi, `ObjectMeta` with its labels, annotations
//! and managed fields) is covered without a hand-written size function per type.
//!
//! What is counted, per serialized shape (the layout of the std types the API uses):
//! - a string: its bytes (a `String` allocated at its length; `Time` and `Quantity` serialize as strings,
//!   so a timestamp counts ~20 bytes it does not own), none for a [`crate::word::Word`] that borrows
//!   the vocabulary;
//! - a sequence: one `Vec` buffer of `len` × the element's inline size (fields summed, no padding), plus
//!   what the elements own;
//! - a map: the nodes of a `BTreeMap` (k8s-openapi's and serde_json's map; a node holds 11 entries, one
//!   node up to 11 entries, about 7 per node beyond), plus what keys and values own;
//! - a `None` or a skipped optional field: 24 inline bytes (most optional fields are strings, vectors,
//!   maps or boxes), nothing on the heap.
//!
//! Every allocation is rounded up to jemalloc's size classes (the agent's allocator). Not seen by serde:
//! `Box` and `Arc` headers (add [`arc_bytes`] for the value's own `Arc`), spare `Vec` capacity, and
//! fields marked `#[serde(skip)]`. Expect a figure within about a quarter of the allocator's; the
//! integration test `tests/heap.rs` compares it with a counting allocator.

use std::mem::size_of;

use serde::Serialize;
use serde::ser;

/// Inline bytes assumed for a `None` or a skipped optional field.
const OPTION_INLINE: usize = 24;
/// Inline bytes of a `String`, a `Vec` or a `BTreeMap`.
const CONTAINER_INLINE: usize = 24;
/// Entries one `BTreeMap` node holds.
const BTREE_CAPACITY: usize = 11;
/// Entries per node once a `BTreeMap` has split (sorted insertion leaves nodes about 2/3 full).
const BTREE_FILL: usize = 7;
/// Bytes of a `BTreeMap` leaf beside its entries (parent pointer, index, length).
const BTREE_NODE_HEADER: usize = 16;
/// Bytes of the reference counts in front of an `Arc`'s value.
pub const ARC_HEADER: usize = 2 * size_of::<usize>();

/// The bytes jemalloc hands out for a request of `n` bytes (its size classes: 8, multiples of 16 up to
/// 128, then four classes per doubling).
pub fn alloc_bytes(n: usize) -> usize {
    match n {
        0 => 0,
        1..=8 => 8,
        9..=128 => n.div_ceil(16) * 16,
        _ => {
            let group = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let step = group / 4;
            n.div_ceil(step) * step
        }
    }
}

/// Heap bytes of the `Arc` allocation holding a `T` (counts and value), without what `T` owns.
pub fn arc_bytes<T>() -> usize {
    alloc_bytes(ARC_HEADER + size_of::<T>())
}

/// Heap bytes of a `String` holding `s` (allocated at its length).
pub fn string_bytes(s: &str) -> usize {
    alloc_bytes(s.len())
}

/// Heap bytes of the nodes of a `BTreeMap` of `len` entries of `entry` inline bytes each (keys and
/// values), without what the keys and values own.
pub fn btree_bytes(len: usize, entry: usize) -> usize {
    let nodes = match len {
        0 => return 0,
        1..=BTREE_CAPACITY => 1,
        _ => len.div_ceil(BTREE_FILL) + len.div_ceil(BTREE_FILL * BTREE_FILL),
    };
    nodes * alloc_bytes(BTREE_CAPACITY * entry + BTREE_NODE_HEADER)
}

/// Heap bytes of a hashbrown/std hash table with `capacity` entries of `T` (slots plus one control byte
/// each, at the 7/8 load factor), without what the entries own.
pub fn hash_table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two().max(4);
    alloc_bytes(buckets * (size_of::<T>() + 1))
}

/// The one shrink rule of the agent's tables: the capacity to shrink a table of `len` entries and
/// `capacity` slots to (twice its length) once it is less than a quarter full and holds more than `min`
/// slots, else `None`. Amortized O(1) per removal, and a table emptied by a burst of removals gives its
/// memory back instead of keeping its peak.
pub fn shrunk_capacity(len: usize, capacity: usize, min: usize) -> Option<usize> {
    (capacity > min && len.saturating_mul(4) < capacity).then(|| len.saturating_mul(2))
}

/// The approximate heap bytes `value` owns (see the module docs for what is counted); 0 when it cannot
/// be serialized.
pub fn approx_heap_bytes<T: Serialize + ?Sized>(value: &T) -> usize {
    value.serialize(Sizer).map_or(0, |s| s.heap)
}

/// Inline and heap bytes of one serialized value.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    inline: usize,
    heap: usize,
}

impl Size {
    const fn inline(inline: usize) -> Size {
        Size { inline, heap: 0 }
    }
}

/// A serializer refused the value (a custom error of its `Serialize`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SizeError(String);

impl ser::Error for SizeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        SizeError(msg.to_string())
    }
}

struct Sizer;

/// A sequence, tuple or struct being sized: its elements' inline and heap bytes so far.
#[derive(Default)]
struct Fields {
    /// Sum of the elements' inline bytes.
    inline: usize,
    /// Sum of what the elements own.
    heap: usize,
    /// A tag word in front (enum variants).
    tag: usize,
}

impl Fields {
    fn add<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SizeError> {
        let s = v.serialize(Sizer)?;
        self.inline += s.inline;
        self.heap += s.heap;
        Ok(())
    }

    /// As the inline value of a struct, tuple or variant.
    fn inline_value(&self) -> Size {
        Size {
            inline: self.inline + self.tag,
            heap: self.heap,
        }
    }

    /// As a `Vec`: one buffer of the elements' inline bytes.
    fn vec(&self) -> Size {
        Size {
            inline: CONTAINER_INLINE,
            heap: alloc_bytes(self.inline) + self.heap,
        }
    }
}

/// A map being sized.
#[derive(Default)]
struct Entries {
    len: usize,
    /// The largest entry (key + value inline bytes): the node slot size.
    entry: usize,
    key: usize,
    heap: usize,
}

impl Entries {
    fn done(&self) -> Size {
        Size {
            inline: CONTAINER_INLINE,
            heap: btree_bytes(self.len, self.entry.max(self.key)) + self.heap,
        }
    }
}

impl ser::Serializer for Sizer {
    type Ok = Size;
    type Error = SizeError;
    type SerializeSeq = Fields;
    type SerializeTuple = Fields;
    type SerializeTupleStruct = Fields;
    type SerializeTupleVariant = Fields;
    type SerializeMap = Entries;
    type SerializeStruct = Fields;
    type SerializeStructVariant = Fields;

    fn serialize_bool(self, _: bool) -> Result<Size, SizeError> {
        Ok(Size::inline(1))
    }
    fn serialize_i8(self, _: i8) -> Result<Size, SizeError> {
        Ok(Size::inline(1))
    }
    fn serialize_i16(self, _: i16) -> Result<Size, SizeError> {
        Ok(Size::inline(2))
    }
    fn serialize_i32(self, _: i32) -> Result<Size, SizeError> {
        Ok(Size::inline(4))
    }
    fn serialize_i64(self, _: i64) -> Result<Size, SizeError> {
        Ok(Size::inline(8))
    }
    fn serialize_i128(self, _: i128) -> Result<Size, SizeError> {
        Ok(Size::inline(16))
    }
    fn serialize_u8(self, _: u8) -> Result<Size, SizeError> {
        Ok(Size::inline(1))
    }
    fn serialize_u16(self, _: u16) -> Result<Size, SizeError> {
        Ok(Size::inline(2))
    }
    fn serialize_u32(self, _: u32) -> Result<Size, SizeError> {
        Ok(Size::inline(4))
    }
    fn serialize_u64(self, _: u64) -> Result<Size, SizeError> {
        Ok(Size::inline(8))
    }
    fn serialize_u128(self, _: u128) -> Result<Size, SizeError> {
        Ok(Size::inline(16))
    }
    fn serialize_f32(self, _: f32) -> Result<Size, SizeError> {
        Ok(Size::inline(4))
    }
    fn serialize_f64(self, _: f64) -> Result<Size, SizeError> {
        Ok(Size::inline(8))
    }
    fn serialize_char(self, _: char) -> Result<Size, SizeError> {
        Ok(Size::inline(4))
    }
    fn serialize_str(self, v: &str) -> Result<Size, SizeError> {
        // a [`crate::word::Word`] borrowing the vocabulary owns nothing
        let heap = if crate::word::is_vocabulary(v) {
            0
        } else {
            string_bytes(v)
        };
        Ok(Size {
            inline: CONTAINER_INLINE,
            heap,
        })
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Size, SizeError> {
        Ok(Size {
            inline: CONTAINER_INLINE,
            heap: alloc_bytes(v.len()),
        })
    }
    fn serialize_none(self) -> Result<Size, SizeError> {
        Ok(Size::inline(OPTION_INLINE))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Size, SizeError> {
        value.serialize(Sizer)
    }
    fn serialize_unit(self) -> Result<Size, SizeError> {
        Ok(Size::default())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Size, SizeError> {
        Ok(Size::default())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<Size, SizeError> {
        Ok(Size::inline(1))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Size, SizeError> {
        value.serialize(Sizer)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<Size, SizeError> {
        let s = value.serialize(Sizer)?;
        Ok(Size {
            inline: s.inline + 8,
            heap: s.heap,
        })
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Fields, SizeError> {
        Ok(Fields::default())
    }
    fn serialize_tuple(self, _: usize) -> Result<Fields, SizeError> {
        Ok(Fields::default())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Fields, SizeError> {
        Ok(Fields::default())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields, SizeError> {
        Ok(Fields {
            tag: 8,
            ..Fields::default()
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Entries, SizeError> {
        Ok(Entries::default())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields, SizeError> {
        Ok(Fields::default())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields, SizeError> {
        Ok(Fields {
            tag: 8,
            ..Fields::default()
        })
    }
}

impl ser::SerializeSeq for Fields {
    type Ok = Size;
    type Error = SizeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SizeError> {
        self.add(v)
    }
    fn end(self) -> Result<Size, SizeError> {
        Ok(self.vec())
    }
}

impl ser::SerializeTuple for Fields {
    type Ok = Size;
    type Error = SizeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SizeError> {
        self.add(v)
    }
    fn end(self) -> Result<Size, SizeError> {
        Ok(self.inline_value())
    }
}

impl ser::SerializeTupleStruct for Fields {
    type Ok = Size;
    type Error = SizeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SizeError> {
        self.add(v)
    }
    fn end(self) -> Result<Size, SizeError> {
        Ok(self.inline_value())
    }
}

impl ser::SerializeTupleVariant for Fields {
    type Ok = Size;
    type Error = SizeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SizeError> {
        self.add(v)
    }
    fn end(self) -> Result<Size, SizeError> {
        Ok(self.inline_value())
    }
}

impl ser::SerializeStruct for Fields {
    type Ok = Size;
    type Error = SizeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Result<(), SizeError> {
        self.add(v)
    }
    fn skip_field(&mut self, _: &'static str) -> Result<(), SizeError> {
        self.inline += OPTION_INLINE;
        Ok(())
    }
    fn end(self) -> Result<Size, SizeError> {
        Ok(self.inline_value())
    }
}

impl ser::SerializeStructVariant for Fields {
    type Ok = Size;
    type Error = SizeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Result<(), SizeError> {
        self.add(v)
    }
    fn skip_field(&mut self, _: &'static str) -> Result<(), SizeError> {
        self.inline += OPTION_INLINE;
        Ok(())
    }
    fn end(self) -> Result<Size, SizeError> {
        Ok(self.inline_value())
    }
}

impl ser::SerializeMap for Entries {
    type Ok = Size;
    type Error = SizeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), SizeError> {
        let s = k.serialize(Sizer)?;
        self.key = s.inline;
        self.heap += s.heap;
        self.len += 1;
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SizeError> {
        let s = v.serialize(Sizer)?;
        self.entry = self.entry.max(self.key + s.inline);
        self.heap += s.heap;
        Ok(())
    }
    fn end(self) -> Result<Size, SizeError> {
        Ok(self.done())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn size_classes_are_jemallocs() {
        let got: Vec<usize> = [0, 1, 8, 9, 16, 17, 128, 129, 160, 161, 256, 257, 300, 513, 4097]
            .iter()
            .map(|&n| alloc_bytes(n))
            .collect();
        assert_eq!(
            got,
            [0, 8, 8, 16, 16, 32, 128, 160, 160, 192, 256, 320, 320, 640, 5120]
        );
    }

    #[test]
    fn strings_in_a_vector_grow_the_estimate_by_their_bytes_and_slots() {
        let strings = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{i:040}")).collect() };
        assert_eq!(approx_heap_bytes(&strings(0)), 0);
        // 40-byte strings take 48-byte blocks; the buffer holds 24 bytes a slot
        assert_eq!(approx_heap_bytes(&strings(1)), alloc_bytes(24) + 48);
        let (a, b) = (approx_heap_bytes(&strings(100)), approx_heap_bytes(&strings(200)));
        let per = (b - a) as f64 / 100.0;
        assert!((68.0..=76.0).contains(&per), "{per} bytes per 40-byte string");
    }

    #[test]
    fn a_table_shrinks_to_twice_its_length_once_under_a_quarter_full() {
        assert_eq!(shrunk_capacity(10, 1024, 64), Some(20));
        assert_eq!(shrunk_capacity(0, 1024, 64), Some(0));
        assert_eq!(shrunk_capacity(256, 1024, 64), None, "a quarter full stays");
        assert_eq!(shrunk_capacity(1, 64, 64), None, "small tables stay");
        assert_eq!(shrunk_capacity(1, 8, 0), Some(2));
        // After a shrink the table is half full: the next shrink needs its length to halve again.
        let mut cap = 1 << 14;
        let mut shrinks = 0;
        for len in (0..cap / 4).rev() {
            if let Some(c) = shrunk_capacity(len, cap, 0) {
                assert!(c >= len);
                cap = c.max(1);
                shrinks += 1;
            }
        }
        assert!(shrinks <= 14, "{shrinks} shrinks");
    }

    #[test]
    fn a_map_counts_its_nodes_and_its_entries() {
        let map = |n: usize| -> BTreeMap<String, String> {
            (0..n)
                .map(|i| (format!("key-{i:016}"), format!("value-{i:026}")))
                .collect()
        };
        assert_eq!(approx_heap_bytes(&map(0)), 0);
        // one node for up to 11 entries, whatever the count
        let one = approx_heap_bytes(&map(1));
        assert_eq!(one, alloc_bytes(11 * 48 + 16) + 32 + 32);
        let (a, b) = (approx_heap_bytes(&map(1_000)), approx_heap_bytes(&map(2_000)));
        let per = (b - a) as f64 / 1_000.0;
        // 64 bytes of strings and a share of a 640-byte node (7 entries a leaf, and the inner nodes)
        assert!((150.0..=180.0).contains(&per), "{per} bytes per entry");
    }

    #[test]
    fn a_dpa_grows_with_its_labels_and_conditions() {
        let dpa = |n: usize| -> crate::DatadogPodAutoscaler {
            let labels: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| (format!("label-{i:010}"), serde_json::json!(format!("v{i:015}"))))
                .collect();
            let conditions: Vec<serde_json::Value> = (0..n)
                .map(|i| {
                    serde_json::json!({"type": format!("Type{i}"), "status": "True",
                        "reason": "SomeReason", "message": "a message of about forty bytes, more or less"})
                })
                .collect();
            serde_json::from_value(serde_json::json!({
                "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
                "metadata": {"name": "web", "namespace": "default", "labels": labels},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "owner": "Local"},
                "status": {"conditions": conditions},
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let base = approx_heap_bytes(&dpa(0));
        assert!(base > 0, "the names and the target are on the heap");
        let grown = approx_heap_bytes(&dpa(200));
        // per label: 16 + 16 string bytes and a node share; per condition: ~5 slots of 24 bytes and
        // ~60 bytes of strings
        let per = (grown - base) as f64 / 200.0;
        assert!(
            (250.0..=400.0).contains(&per),
            "{per} bytes per label and condition"
        );
    }
}
