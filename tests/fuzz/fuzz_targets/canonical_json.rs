//! The canonical JSON the seed's hash covers (`JSON.stringify`'s form):
//! for any JSON document, it parses back (serde_json) to the same value,
//! numbers compared by value, and writing it again changes nothing.
#![no_main]

use hookhost_core::sign::write_canonical;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut text = String::new();
    write_canonical(&mut text, &value);
    let back: Value = serde_json::from_str(&text).expect("canonical JSON parses");
    assert!(same(&value, &back), "{value} -> {text}");
    let mut again = String::new();
    write_canonical(&mut again, &back);
    assert_eq!(text, again);
});

/// Equal as JSON.stringify sees it: numbers by their f64 value (an integer
/// beyond 2^53 by its exact text).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        _ => a == b,
    }
}
