//! Agent state as JSON objects changed by RFC 7386 JSON Merge Patches.
//!
//! Owns the two rules that make state converge: [`apply`] (RFC 7386 exactly) and [`compose`], which
//! turns two successive patches into one so a slow watcher receives one coalesced delta instead of a
//! backlog. Composition is exact where a merge patch can express the result; where it cannot (an
//! object written where a patch earlier replaced or deleted the value, which a merge patch can only
//! merge into, not replace with), [`compose`] says so and the caller sends a snapshot instead.

use serde_json::{Map, Value};

/// Applies merge patch `patch` to `target` as RFC 7386 section 2 specifies.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { unreachable!("target was just made an object") };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            apply(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The length of `value` written as compact JSON (as it travels), counted without building the text.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(usize::MAX, |()| count.0)
}

/// One patch equivalent to applying `first` then `second`, or `None` when no merge patch can say it.
///
/// For every target `t`: `apply(apply(t, first), second) == apply(t, compose(first, second))`.
pub fn compose(first: &Value, second: &Value) -> Option<Value> {
    let Value::Object(second_map) = second else {
        // A non-object replaces (or, null, deletes) whatever was there.
        return Some(second.clone());
    };
    let Value::Object(first_map) = first else {
        // `first` left a scalar or deleted the value, so `second` builds an object from nothing;
        // a merge patch can only merge into what the target has, so it cannot express that.
        return None;
    };
    let mut out = first_map.clone();
    for (key, value) in second_map {
        let composed = match first_map.get(key) {
            Some(earlier) => compose(earlier, value)?,
            None => value.clone(),
        };
        out.insert(key.clone(), composed);
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        // The test cases of RFC 7386 appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (mut target, patch, expected) in cases {
            apply(&mut target, &patch);
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn compose_is_exact_for_mergeable_patches() {
        let a = json!({"x": 1, "n": {"p": 1, "q": 2}});
        let b = json!({"x": null, "n": {"q": null, "r": 3}, "y": 2});
        let c = compose(&a, &b).unwrap();
        let mut t1 = json!({"x": 0, "n": {"z": 9}, "k": true});
        let mut t2 = t1.clone();
        apply(&mut t1, &a);
        apply(&mut t1, &b);
        apply(&mut t2, &c);
        assert_eq!(t1, t2);
    }

    #[test]
    fn compose_refuses_object_after_replacement() {
        assert_eq!(compose(&json!({"n": 5}), &json!({"n": {"k": 1}})), None);
        assert_eq!(compose(&json!({"n": null}), &json!({"n": {"k": 1}})), None);
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![Just(Value::Null), any::<i8>().prop_map(|i| json!(i)), "[a-c]".prop_map(Value::String)]
    }

    /// Patches over a small key space so that keys collide often.
    fn patch() -> impl Strategy<Value = Value> {
        let value = leaf().prop_recursive(3, 16, 3, |inner| {
            prop::collection::btree_map("[a-d]", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect()))
        });
        prop::collection::btree_map("[a-d]", value, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn document() -> impl Strategy<Value = Value> {
        patch().prop_map(|p| {
            let mut t = json!({});
            apply(&mut t, &p);
            t
        })
    }

    proptest! {
        /// Where composition succeeds, the coalesced delta applied equals the sequence applied.
        #[test]
        fn composed_patch_equals_sequence(start in document(), patches in prop::collection::vec(patch(), 1..8)) {
            let mut sequential = start.clone();
            for p in &patches {
                apply(&mut sequential, p);
            }
            let mut composed = Some(patches[0].clone());
            for p in &patches[1..] {
                composed = composed.and_then(|c| compose(&c, p));
            }
            if let Some(c) = composed {
                let mut coalesced = start.clone();
                apply(&mut coalesced, &c);
                prop_assert_eq!(coalesced, sequential);
            }
        }
    }
}
