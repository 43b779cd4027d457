//! A JSON record read in place: the intake's fast representation for schema checks.
//!
//! [`Tape::parse`] reads a record with `serde_json`'s own parser (the same grammar, number
//! reading and nesting limit as `serde_json::from_slice`) into one flat vector of slots, in
//! document order: a container's slot is followed by its members (an object's as name, value,
//! name, value, ...) and knows where its last descendant ends. Strings without escapes are
//! borrowed from the record's bytes, so a typical record costs one allocation instead of one per
//! string, number of members and map node as a `serde_json::Value` does.
//!
//! [`TapeJson`] lets `jsonschema` validate a tape directly ([`jsonschema::options_for`]).
//!
//! Guarantees: a tape validates exactly as the `serde_json::Value` of the same bytes does. The
//! one place the two could differ is an object naming a member twice (a `Value` keeps the last);
//! [`Tape::parse`] reports such a record as [`Parsed::DuplicateNames`] so that the caller reads it
//! as a `Value` instead. Pinned by the representation conformance check of `jsonschema` and by
//! a property test against `Value` over random records and schemas.

use std::borrow::Cow;
use std::fmt;

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// One place of a tape.
#[derive(Debug)]
enum Slot<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    /// An object's member name, followed by the member's value.
    Name(Cow<'a, str>),
    /// `len` members (or items); `end` is the index just past the last descendant.
    Object {
        len: u32,
        end: u32,
    },
    Array {
        len: u32,
        end: u32,
    },
}

/// A record parsed in place (see the module doc).
#[derive(Debug)]
pub struct Tape<'a> {
    slots: Vec<Slot<'a>>,
}

/// What [`Tape::parse`] found.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// The record, ready to validate.
    Tape(Tape<'a>),
    /// JSON, but an object names a member twice: read it as a `serde_json::Value`.
    DuplicateNames,
    /// Not JSON.
    NotJson,
}

impl<'a> Tape<'a> {
    /// Reads `bytes` as one JSON document (whitespace around it allowed, nothing else).
    pub fn parse(bytes: &'a [u8]) -> Parsed<'a> {
        // About one slot per sixteen bytes of a typical record; the vector grows past that. A first
        // allocation under 1 KiB stays in glibc's per-thread cache (a larger one makes `malloc`
        // consolidate its free lists, a tenth of the parse in a profile).
        let capacity = (bytes.len() / 16 + 4).min(1008 / std::mem::size_of::<Slot<'_>>());
        let mut builder = Builder { slots: Vec::with_capacity(capacity), duplicates: false };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        if SlotSeed(&mut builder).deserialize(&mut de).and_then(|()| de.end()).is_err() {
            return Parsed::NotJson;
        }
        if builder.duplicates {
            return Parsed::DuplicateNames;
        }
        Parsed::Tape(Tape { slots: builder.slots })
    }

    /// The document's root value.
    pub fn root(&self) -> TapeNode<'_> {
        TapeNode { slots: &self.slots, at: 0 }
    }
}

struct Builder<'a> {
    slots: Vec<Slot<'a>>,
    duplicates: bool,
}

/// Appends one value (and its descendants) to the tape.
struct SlotSeed<'b, 'a>(&'b mut Builder<'a>);

impl<'de> DeserializeSeed<'de> for SlotSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.slots.push(Slot::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.slots.push(Slot::Bool(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.slots.push(Slot::Number(v.into()));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.slots.push(Slot::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // As `serde_json::Value` reads it; the parser never yields a non-finite number.
        self.0.slots.push(Number::from_f64(v).map_or(Slot::Null, Slot::Number));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.slots.push(Slot::String(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.slots.push(Slot::String(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.slots.push(Slot::String(Cow::Owned(v)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let at = self.0.slots.len();
        self.0.slots.push(Slot::Array { len: 0, end: 0 });
        let mut len = 0u32;
        while items.next_element_seed(SlotSeed(self.0))?.is_some() {
            len += 1;
        }
        self.0.slots[at] = Slot::Array { len, end: end_index(self.0.slots.len()) };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        let at = self.0.slots.len();
        self.0.slots.push(Slot::Object { len: 0, end: 0 });
        let mut len = 0u32;
        while let Some(name) = members.next_key_seed(NameSeed)? {
            self.0.slots.push(Slot::Name(name));
            members.next_value_seed(SlotSeed(self.0))?;
            len += 1;
        }
        self.0.slots[at] = Slot::Object { len, end: end_index(self.0.slots.len()) };
        let object = TapeObject { node: TapeNode { slots: &self.0.slots, at }, len: len as usize };
        if has_duplicates(object) {
            self.0.duplicates = true;
        }
        Ok(())
    }
}

/// A tape's indexes fit in `u32`: a record is far smaller than 4 GiB slots (the server's message
/// cap is in MiB), and each slot takes at least one byte of it.
fn end_index(len: usize) -> u32 {
    u32::try_from(len).expect("a record has fewer than 2^32 values")
}

fn name_of<'s>(slots: &'s [Slot<'_>], at: usize) -> &'s str {
    match &slots[at] {
        Slot::Name(n) => n,
        _ => unreachable!("a member starts with its name"),
    }
}

/// Whether `object` names a member twice.
fn has_duplicates(object: TapeObject<'_>) -> bool {
    // Pairwise for the few names of a typical record, without allocating; sorted beyond.
    if object.len <= 16 {
        let mut names = object.members().map(|(name, _)| name);
        while let Some(name) = names.next() {
            if names.clone().any(|other| other == name) {
                return true;
            }
        }
        return false;
    }
    let mut sorted: Vec<&str> = object.members().map(|(name, _)| name).collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// Reads a member name, borrowed when it has no escapes.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// The representation `jsonschema` validates: nodes are places on a tape.
pub struct TapeJson;

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = NameBuffer;

    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(buffer: &mut Self::StringBuffer, string: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> T {
        let slots = &mut buffer.0;
        slots.clear();
        slots.push(Slot::String(Cow::Owned(string.to_owned())));
        f(TapeNode { slots, at: 0 })
    }
}

/// A one-slot tape holding a property name (`propertyNames` validates names as strings).
#[derive(Default)]
pub struct NameBuffer(Vec<Slot<'static>>);

/// One value of a tape.
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
}

impl<'a> TapeNode<'a> {
    fn slot(&self) -> &'a Slot<'a> {
        &self.slots[self.at]
    }

    /// The index just past this value and its descendants.
    fn end(&self) -> usize {
        match self.slot() {
            Slot::Object { end, .. } | Slot::Array { end, .. } => *end as usize,
            _ => self.at + 1,
        }
    }

    fn at(&self, at: usize) -> TapeNode<'a> {
        TapeNode { slots: self.slots, at }
    }

    /// The value at JSON pointer `ptr` (RFC 6901), found as `serde_json::Value::pointer` finds it.
    pub fn pointer(&self, ptr: &str) -> Option<TapeNode<'a>> {
        if ptr.is_empty() {
            return Some(*self);
        }
        ptr.strip_prefix('/')?.split('/').try_fold(*self, |node, raw| {
            let token: Cow<str> =
                if raw.contains('~') { raw.replace("~1", "/").replace("~0", "~").into() } else { raw.into() };
            if let Some(object) = node.as_object() {
                object.members().find(|(name, _)| *name == token).map(|(_, value)| value)
            } else if let Some(array) = node.as_array() {
                array_index(&token).and_then(|i| array.elements().nth(i))
            } else {
                None
            }
        })
    }
}

/// An array index of a pointer: digits without a sign or a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        match self.slot() {
            Slot::Object { len, .. } => Some(TapeObject { node: *self, len: *len as usize }),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        match self.slot() {
            Slot::Array { len, .. } => Some(TapeArray { node: *self, len: *len as usize }),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self.slot() {
            Slot::String(s) => Some(Cow::Borrowed(s)),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.slot() {
            Slot::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.slot() {
            Slot::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.slot(), Slot::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.slot() {
            Slot::Null => JsonType::Null,
            Slot::Bool(_) => JsonType::Boolean,
            Slot::Number(_) => JsonType::Number,
            Slot::String(_) | Slot::Name(_) => JsonType::String,
            Slot::Array { .. } => JsonType::Array,
            Slot::Object { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` and `const` on strings, the common case, without building a `Value`.
        match (self.slot(), expected) {
            (Slot::String(s), Value::String(e)) => s == e,
            (Slot::String(_), _) => false,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match self.slot() {
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(*b),
            Slot::Number(n) => Value::Number(n.clone()),
            Slot::String(s) | Slot::Name(s) => Value::String(s.to_string()),
            Slot::Array { len, .. } => Value::Array(
                TapeArray { node: *self, len: *len as usize }.elements().map(|e| e.to_value().into_owned()).collect(),
            ),
            Slot::Object { len, .. } => Value::Object(
                TapeObject { node: *self, len: *len as usize }
                    .members()
                    .map(|(name, value)| (name.to_owned(), value.to_value().into_owned()))
                    .collect(),
            ),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        // Nodes of one tape share its address and differ by place; a string buffer is its own
        // allocation.
        Some(NodeIdentity::tagged(self.slots.as_ptr() as usize, self.at as u32))
    }
}

/// An object of a tape.
#[derive(Clone, Copy)]
pub struct TapeObject<'a> {
    node: TapeNode<'a>,
    len: usize,
}

/// The members of an object, in document order.
#[derive(Clone)]
pub struct TapeMembers<'a> {
    node: TapeNode<'a>,
    left: usize,
}

impl<'a> Iterator for TapeMembers<'a> {
    type Item = (&'a str, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = name_of(self.node.slots, self.node.at);
        let value = self.node.at(self.node.at + 1);
        self.node = self.node.at(value.end());
        Some((name, value))
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = TapeMembers<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        self.members().find(|(name, _)| *name == key).map(|(_, value)| value)
    }

    fn members(&self) -> TapeMembers<'a> {
        TapeMembers { node: self.node.at(self.node.at + 1), left: self.len }
    }
}

/// An array of a tape.
#[derive(Clone, Copy)]
pub struct TapeArray<'a> {
    node: TapeNode<'a>,
    len: usize,
}

/// The items of an array, in order.
pub struct TapeItems<'a> {
    next: TapeNode<'a>,
    left: usize,
}

impl<'a> Iterator for TapeItems<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = self.next;
        self.next = item.at(item.end());
        Some(item)
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = TapeItems<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn elements(&self) -> TapeItems<'a> {
        TapeItems { next: self.node.at(self.node.at + 1), left: self.len }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn tape(bytes: &[u8]) -> Tape<'_> {
        match Tape::parse(bytes) {
            Parsed::Tape(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_representation_keeps_the_contract_jsonschema_relies_on() {
        let text = jsonschema::json::conformance::document().to_string();
        let t = tape(text.as_bytes());
        jsonschema::json::conformance::assert_conformance::<TapeJson>(&t.root());
    }

    #[test]
    fn a_tape_reads_back_as_the_value_of_the_same_bytes() {
        let text = r#" {"a": [1, -2, 3.5, {"b\n": "x\u00e9"}, [], {}], "c": null, "d": true, "e": 1e3} "#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(tape(text.as_bytes()).root().to_value().into_owned(), value);
    }

    #[test]
    fn pointers_read_as_on_a_value_at_the_edges() {
        let text = r#"{"a": [10, 11, {"b": 2}], "x/y": 1, "~": 2, "": {"": 3}, "7": 4}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let t = tape(text.as_bytes());
        let cases = [
            "", "/", "//", "/a/0", "/a/1", "/a/01", "/a/+1", "/a/-1", "/a/2/b", "/a/3", "/x~1y", "/~0", "/~01", "/7",
            "a",
        ];
        for p in cases {
            let found = t.root().pointer(p).map(|n| n.to_value().into_owned());
            assert_eq!(found.as_ref(), value.pointer(p), "{p}");
        }
        assert!(t.root().pointer("/a/01").is_none());
        assert_eq!(t.root().pointer("//").map(|n| n.to_value().into_owned()), Some(json!(3)));
    }

    #[test]
    fn not_json_and_repeated_names_are_told_apart() {
        for bad in [&b""[..], b"{", b"[1,]", b"1 2", b"\"\\x\"", b"nul", b"{\"a\" 1}"] {
            assert!(matches!(Tape::parse(bad), Parsed::NotJson), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(Tape::parse(br#"{"a": 1, "b": {"c": 1, "c": 2}}"#), Parsed::DuplicateNames));
        let many: String =
            format!("{{{}, \"k7\": 0}}", (0..40).map(|i| format!("\"k{i}\": {i}")).collect::<Vec<_>>().join(", "));
        assert!(matches!(Tape::parse(many.as_bytes()), Parsed::DuplicateNames));
        let distinct: String =
            format!("{{{}}}", (0..40).map(|i| format!("\"k{i}\": {i}")).collect::<Vec<_>>().join(", "));
        assert!(matches!(Tape::parse(distinct.as_bytes()), Parsed::Tape(_)));
    }

    #[test]
    fn nesting_is_bounded_as_for_a_value() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for n in [100, 127, 128, 129, 1000] {
            let as_value = serde_json::from_str::<Value>(&deep(n)).is_ok();
            assert_eq!(matches!(Tape::parse(deep(n).as_bytes()), Parsed::Tape(_)), as_value, "depth {n}");
        }
    }

    fn schemas() -> Vec<Value> {
        vec![
            json!({"type": "object", "required": ["kind", "px"], "properties": {
                "kind": {"type": "string", "enum": ["tick", "fill"]},
                "symbol": {"type": "string", "pattern": "^[A-Z]{2,6}$"},
                "px": {"type": "number", "minimum": 0},
                "qty": {"type": "number", "exclusiveMinimum": 0},
                "seq": {"type": "integer", "minimum": 0}}}),
            json!({"type": "array", "items": {"type": ["integer", "string"]}, "uniqueItems": true, "maxItems": 4}),
            json!({"additionalProperties": false, "properties": {"a": {"const": [1, {"b": null}]}},
                "propertyNames": {"maxLength": 2}, "minProperties": 1}),
            json!({"anyOf": [{"type": "string", "minLength": 2, "maxLength": 3}, {"type": "null"},
                {"type": "object", "patternProperties": {"^x": {"type": "boolean"}}, "dependentRequired": {"a": ["b"]}}]}),
            json!({"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"},
                "v": {"multipleOf": 0.5}}}}, "$ref": "#/$defs/node"}),
            json!({"not": {"contains": {"const": 3}}, "type": "array", "prefixItems": [{"type": "number"}]}),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(|n| json!(n)),
            prop_oneof![Just(0.5), Just(1.0), Just(-2.5), Just(3.0)].prop_map(|f: f64| json!(f)),
            prop_oneof![Just("tick"), Just("fill"), Just("BTC"), Just("é"), Just("xy"), Just(""), Just("a\"b")]
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("kind"),
                            Just("px"),
                            Just("qty"),
                            Just("seq"),
                            Just("symbol"),
                            Just("a"),
                            Just("b"),
                            Just("xa"),
                            Just("next"),
                            Just("v"),
                            Just("~"),
                            Just("x/y"),
                            Just("")
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|members| Value::Object(members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    fn pointer() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("kind"),
            Just("a"),
            Just("b"),
            Just("next"),
            Just("0"),
            Just("1"),
            Just("01"),
            Just("+1"),
            Just("-1"),
            Just(""),
            Just("~0"),
            Just("x~1y"),
        ];
        prop_oneof![
            Just(String::new()),
            Just("kind".to_owned()),
            prop::collection::vec(token, 1..4).prop_map(|t| format!("/{}", t.join("/"))),
        ]
    }

    proptest! {
        /// A pointer finds on a tape what it finds on the `Value` of the same bytes.
        #[test]
        fn a_pointer_finds_on_a_tape_what_it_finds_on_the_value(v in value(), p in pointer()) {
            let text = v.to_string();
            let t = tape(text.as_bytes());
            let found = t.root().pointer(&p).map(|n| n.to_value().into_owned());
            prop_assert_eq!(found.as_ref(), v.pointer(&p), "{} in {}", p, text);
        }

        /// Any bytes: read in place exactly when they read as a `Value`, and then read back as it.
        #[test]
        fn any_bytes_read_in_place_exactly_when_they_read_as_a_value(
            text in proptest::collection::vec(
                prop_oneof![Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b':'), Just(b','),
                    Just(b'1'), Just(b'-'), Just(b'.'), Just(b'e'), Just(b'a'), Just(b'\\'), Just(b' '), Just(0xc3),
                    Just(0xa9), any::<u8>()],
                0..40,
            )
        ) {
            let as_value = serde_json::from_slice::<Value>(&text);
            match Tape::parse(&text) {
                Parsed::Tape(t) => prop_assert_eq!(Some(t.root().to_value().into_owned()), as_value.ok()),
                Parsed::DuplicateNames => prop_assert!(as_value.is_ok()),
                Parsed::NotJson => prop_assert!(as_value.is_err()),
            }
        }

        /// A tape validates as the `Value` of the same bytes, valid or not.
        #[test]
        fn a_tape_validates_as_the_value_of_the_same_bytes(v in value(), pick in 0usize..6) {
            let schema = &schemas()[pick];
            let on_values = jsonschema::validator_for(schema).unwrap();
            let on_tapes = jsonschema::options_for::<TapeJson>().build(schema).unwrap();
            let text = v.to_string();
            let t = tape(text.as_bytes());
            prop_assert_eq!(on_tapes.is_valid(t.root()), on_values.is_valid(&v), "{} against {}", text, schema);
        }
    }
}
