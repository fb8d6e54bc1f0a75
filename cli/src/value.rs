//! Decoding a segment's bytes into JSON, from the layout it stores.

use serde_json::{Map, Number, Value};
use typed_shm::Primitive;
use typed_shm::inspect::{Layout, Segment};

/// The data of `seg` (a copy in `bytes`) as JSON: a struct is an object by
/// field name, an array a JSON array, a number a number; a slice segment
/// is an array of its elements. Without a stored layout, the bytes.
pub fn decode(seg: &Segment, bytes: &[u8]) -> Value {
    let Some(layout) = seg.layout() else {
        return Value::Array(bytes.iter().map(|&b| Value::from(b)).collect());
    };
    if seg.is_slice() {
        let size = layout.size().max(1);
        Value::Array(bytes.chunks_exact(size).map(|e| value(layout, e)).collect())
    } else {
        value(layout, bytes)
    }
}

/// `bytes` (at least `layout.size()` long: the layout was checked against
/// the element size when the segment was opened) as JSON.
fn value(layout: &Layout, bytes: &[u8]) -> Value {
    match layout {
        Layout::Primitive { kind, size, .. } => primitive(*kind, bytes.get(..*size).unwrap_or(&[])),
        Layout::Array { element, len, .. } => {
            let size = element.size();
            Value::Array(
                (0..*len)
                    .map(|i| value(element, bytes.get(i * size..).unwrap_or(&[])))
                    .collect(),
            )
        }
        Layout::Struct { fields, .. } => {
            let mut map = Map::new();
            for f in fields {
                map.insert(
                    f.name.clone(),
                    value(&f.layout, bytes.get(f.offset..).unwrap_or(&[])),
                );
            }
            Value::Object(map)
        }
    }
}

fn primitive(kind: Primitive, b: &[u8]) -> Value {
    // Native byte order: the header's ABI stamp, checked when the segment
    // was opened, says the writer used this machine's.
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        let n = b.len().min(N);
        a[..n].copy_from_slice(&b[..n]);
        a
    }
    let (unsigned, signed): (u128, i128) = match b.len() {
        1 => (u8::from_ne_bytes(arr(b)).into(), i8::from_ne_bytes(arr(b)).into()),
        2 => (
            u16::from_ne_bytes(arr(b)).into(),
            i16::from_ne_bytes(arr(b)).into(),
        ),
        4 => (
            u32::from_ne_bytes(arr(b)).into(),
            i32::from_ne_bytes(arr(b)).into(),
        ),
        8 => (
            u64::from_ne_bytes(arr(b)).into(),
            i64::from_ne_bytes(arr(b)).into(),
        ),
        _ => (u128::from_ne_bytes(arr(b)), i128::from_ne_bytes(arr(b))),
    };
    match kind {
        // The shortest decimal that reads back as the same f32 (20.6, not
        // 20.600000381469727).
        Primitive::F32 => {
            let v = f32::from_ne_bytes(arr(b));
            float(v.to_string().parse().unwrap_or(f64::from(v)))
        }
        Primitive::F64 => float(f64::from_ne_bytes(arr(b))),
        k if k.is_signed() => match i64::try_from(signed) {
            Ok(v) => Value::from(v),
            Err(_) => Value::String(signed.to_string()),
        },
        _ => match u64::try_from(unsigned) {
            Ok(v) => Value::from(v),
            Err(_) => Value::String(unsigned.to_string()),
        },
    }
}

/// JSON has no NaN or infinities: those become strings.
fn float(v: f64) -> Value {
    Number::from_f64(v).map_or_else(|| Value::String(v.to_string()), Value::Number)
}

/// The leaves of `v` as `path = value` pairs for the readable form; arrays
/// of numbers stay on one line.
pub fn flatten(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        leaf => out.push((
            if path.is_empty() {
                "value".into()
            } else {
                path.into()
            },
            leaf.to_string(),
        )),
    }
}
