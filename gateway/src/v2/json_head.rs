//! The JSON head of a V2 REST infer request, read with each input's numeric `data`
//! straight into a flat list of numbers instead of a `serde_json::Value` per number.
//!
//! Everything else of the head (`id`, `parameters`, `outputs`, each input's `name`,
//! `datatype`, `shape`, `parameters`) is read into `Value`s as before, so `rest.rs`
//! checks it the same way. The reader stops at anything it does not take as it is (a
//! head that is not an object, `inputs` not an array of objects, `data` holding
//! anything but numbers and arrays, `inputs` or `data` twice, bad JSON); the caller then
//! reads the head as one `Value`, which gives the same result or the same error.
//! serde_json reads the numbers in both cases, so they are the same numbers.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON number as serde_json types it.
#[derive(Clone, Copy, Debug)]
pub enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Number {
    /// `Value::as_f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::U64(u) => u as f64,
            Number::I64(i) => i as f64,
            Number::F64(f) => f,
        }
    }

    /// `Value::as_i64`, else `Value::as_u64`.
    pub fn as_int(self) -> Option<i128> {
        match self {
            Number::U64(u) => Some(u.into()),
            Number::I64(i) => Some(i.into()),
            Number::F64(_) => None,
        }
    }

    /// The number as the `Value` it would have been (for error messages).
    pub fn to_value(self) -> Value {
        match self {
            Number::U64(u) => u.into(),
            Number::I64(i) => i.into(),
            Number::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

/// A head read: the document, its inputs without their `data`, and each input's
/// numbers (`None` for an input that had no `data`).
pub struct Head {
    pub doc: Value,
    pub numbers: Vec<Option<Vec<Number>>>,
}

/// Reads `head` if it is an object whose inputs' `data` are numbers; `None` for any
/// other head, to be read as a `Value`.
pub fn read(head: &[u8]) -> Option<Head> {
    let mut de = serde_json::Deserializer::from_slice(head);
    let read = HeadSeed.deserialize(&mut de).ok()?;
    // serde_json::from_slice refuses trailing characters too.
    de.end().ok()?;
    Some(read)
}

/// Refused by the typed reader: the caller reads the head as a `Value` instead.
fn not_taken<E: de::Error>() -> E {
    E::custom("not read here")
}

struct HeadSeed;

impl<'de> DeserializeSeed<'de> for HeadSeed {
    type Value = Head;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeadSeed {
    type Value = Head;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an infer request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let mut doc = Map::new();
        let mut numbers = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "inputs" {
                if numbers.is_some() {
                    return Err(not_taken());
                }
                let (inputs, data) = map.next_value_seed(InputsSeed)?;
                doc.insert(key, Value::Array(inputs));
                numbers = Some(data);
            } else {
                // A repeated key replaces the earlier value, as in a `Value`.
                doc.insert(key, map.next_value()?);
            }
        }
        Ok(Head {
            doc: Value::Object(doc),
            numbers: numbers.unwrap_or_default(),
        })
    }
}

struct InputsSeed;

impl<'de> DeserializeSeed<'de> for InputsSeed {
    type Value = (Vec<Value>, Vec<Option<Vec<Number>>>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed {
    type Value = (Vec<Value>, Vec<Option<Vec<Number>>>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of inputs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut inputs, mut numbers) = (Vec::new(), Vec::new());
        while let Some((input, data)) = seq.next_element_seed(InputSeed)? {
            inputs.push(input);
            numbers.push(data);
        }
        Ok((inputs, numbers))
    }
}

struct InputSeed;

impl<'de> DeserializeSeed<'de> for InputSeed {
    type Value = (Value, Option<Vec<Number>>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed {
    type Value = (Value, Option<Vec<Number>>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut input = Map::new();
        let mut data = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "data" {
                if data.is_some() {
                    return Err(not_taken());
                }
                let mut out = Vec::new();
                map.next_value_seed(Numbers(&mut out))?;
                data = Some(out);
            } else {
                input.insert(key, map.next_value()?);
            }
        }
        Ok((Value::Object(input), data))
    }
}

/// Numbers, or arrays of them nested to any depth, appended in row-major order (what
/// `rest.rs`'s `flatten` makes of a `Value`).
struct Numbers<'a>(&'a mut Vec<Number>);

impl<'de> DeserializeSeed<'de> for Numbers<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Numbers<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(Number::U64(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(Number::I64(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(Number::F64(v));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.0.reserve(n);
        }
        while seq.next_element_seed(Numbers(&mut *self.0))?.is_some() {}
        Ok(())
    }
}
