//! Delivery bodies and their signatures.
//!
//! - Envelopes: `bikeep-v2` `{"type","data","version":2,"hash"}`,
//!   `bikeep-v1` `{"data","version":1,"hash"}` with the v1 name in
//!   `data.type`, and `plain` (the billing-seed style `{"type", ...data}`).
//! - The seed's hash: `hex(SHA256(JSON(data) + seed))`, where JSON(data) is
//!   byte for byte the `data` in the body sent.
//! - Standard Webhooks headers when `whsec_` secrets are set.
//!
//! # JSON(data): the form most verifiers reproduce
//! Verifiers re-serialize the parsed `data` and hash that, so the body must
//! be written the way their serializer writes it. Keys keep the order they
//! were ingested in, with no whitespace. Numbers are written as ECMAScript's
//! `Number#toString` does (integral floats as integers: `1.0` → `1`;
//! `1e21` → `1e+21`), which the seed's Node verifier (`JSON.stringify`) and
//! Python verifier (`json.dumps`) both reproduce for integers, integral
//! floats and ordinary decimals. Non-ASCII text is sent as raw UTF-8, as
//! JavaScript, Ruby, Java and Go write it; Python's `json.dumps` escapes it
//! unless given `ensure_ascii=False`, so Python verifiers need that flag for
//! non-ASCII data. Limits no byte form can avoid: integers beyond 2^53 lose
//! precision in JavaScript, and exponents like `1e-7` are written `1e-7`
//! (JavaScript) where Python writes `1e-07`.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("event data is not a JSON object: {0}")]
    BadData(String),
    #[error("a secret must look like `whsec_<base64 key>`")]
    BadSecret,
}

/// A Standard Webhooks secret for `key`: `whsec_` and the key in base64.
pub fn whsec_secret(key: &[u8]) -> String {
    format!("whsec_{}", BASE64.encode(key))
}

/// Writes `value` compactly in the form described in the module docs.
pub fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map.iter()),
    }
}

fn write_object<'a>(out: &mut String, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_canonical(out, v);
    }
    out.push('}');
}

fn write_string(out: &mut String, s: &str) {
    // serde_json escapes exactly what JSON.stringify and json.dumps escape
    // for ASCII (quote, backslash, control characters).
    out.push_str(&serde_json::to_string(s).expect("a str always serializes"));
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if n.is_i64() || n.is_u64() {
        let _ = write!(out, "{n}");
        return;
    }
    let x = n.as_f64().unwrap_or(0.0);
    if x == 0.0 {
        out.push('0'); // JSON.stringify(-0) is "0"
    } else if x.fract() == 0.0 && x.abs() < 1e21 {
        let _ = write!(out, "{x:.0}");
    } else {
        out.push_str(ryu_js::Buffer::new().format(x));
    }
}

/// `hex(SHA256(json_data + seed))`.
pub fn seed_hash(json_data: &str, seed: &str) -> String {
    let mut h = Sha256::new();
    h.update(json_data.as_bytes());
    h.update(seed.as_bytes());
    hex::encode(h.finalize())
}

/// The version-1 name carried in `data.type`, for types that had one.
fn v1_data_type(event_type: &str) -> Option<&'static str> {
    match event_type {
        "connection" => Some("connection_changed"),
        "alarm" => Some("alarm"),
        _ => None,
    }
}

/// Builds the body of a delivery.
pub fn body(
    envelope: Envelope,
    event_type: &str,
    data_json: &str,
    seed: Option<&str>,
) -> Result<String, SignError> {
    let mut data: Map<String, Value> =
        serde_json::from_str(data_json).map_err(|e| SignError::BadData(e.to_string()))?;
    let mut out = String::with_capacity(data_json.len() + 128);
    match envelope {
        Envelope::BikeepV2 | Envelope::BikeepV1 => {
            if envelope == Envelope::BikeepV1
                && let Some(name) = v1_data_type(event_type)
            {
                match data.get_mut("type") {
                    Some(v) => *v = Value::String(name.into()),
                    None => {
                        data.shift_insert(0, "type".into(), Value::String(name.into()));
                    }
                }
            }
            let mut json_data = String::with_capacity(data_json.len());
            write_object(&mut json_data, data.iter());
            let hash = seed_hash(&json_data, seed.unwrap_or(""));
            if envelope == Envelope::BikeepV2 {
                out.push_str("{\"type\":");
                write_string(&mut out, event_type);
                out.push_str(",\"data\":");
            } else {
                out.push_str("{\"data\":");
            }
            out.push_str(&json_data);
            let version = if envelope == Envelope::BikeepV2 { 2 } else { 1 };
            let _ = write!(out, ",\"version\":{version},\"hash\":\"{hash}\"}}");
        }
        Envelope::Plain => {
            data.shift_remove("type");
            let ty = ("type".to_string(), Value::String(event_type.into()));
            write_object(&mut out, std::iter::once((&ty.0, &ty.1)).chain(data.iter()));
        }
    }
    Ok(out)
}

/// Compares without an early exit, so timing does not reveal a secret: both
/// sides are hashed first, so neither the content nor the length of the
/// expected value shows in how long a wrong guess takes.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The HMAC key of a `whsec_` secret.
pub fn whsec_key(secret: &str) -> Result<Vec<u8>, SignError> {
    let b64 = secret.strip_prefix("whsec_").ok_or(SignError::BadSecret)?;
    let key = BASE64.decode(b64).map_err(|_| SignError::BadSecret)?;
    if key.is_empty() {
        return Err(SignError::BadSecret);
    }
    Ok(key)
}

/// Standard Webhooks `webhook-signature`: `v1,<base64 HMAC-SHA256(id.ts.body)>`
/// per secret, space separated.
pub fn standard_signature(keys: &[Vec<u8>], id: &str, timestamp: u64, body: &str) -> String {
    let mut header = String::new();
    for key in keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        header.push_str(&BASE64.encode(mac.finalize().into_bytes()));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_matches_equal_values_only_whatever_their_lengths() {
        assert!(constant_time_eq(b"token-1", b"token-1"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"token-1", b"token-2"));
        assert!(!constant_time_eq(b"token", b"token-1"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    fn canonical(text: &str) -> String {
        let v: Value = serde_json::from_str(text).unwrap();
        let mut out = String::new();
        write_canonical(&mut out, &v);
        out
    }

    #[test]
    fn numbers_are_written_as_javascript_does() {
        assert_eq!(
            canonical("[1, -3, 1.0, 2.50, 1e21, 1e20, 0.1, -0.0, 1.5e-7, 12345678901234567890]"),
            "[1,-3,1,2.5,1e+21,100000000000000000000,0.1,0,1.5e-7,12345678901234567890]"
        );
    }

    /// Found by fuzzing (FUZZING.md): serde_json's default float parser is
    /// off by one unit in the last place for some long numbers, and then the
    /// hash covers other digits than JavaScript's JSON.stringify writes
    /// (checked with node: `2.222222222222222e+50`). The workspace enables
    /// serde_json's `float_roundtrip` (correct rounding) for this.
    #[test]
    fn long_numbers_are_read_correctly_rounded_as_javascript_does() {
        assert_eq!(
            canonical("222222222222222222222222622222222222244444444444222"),
            "2.222222222222222e+50"
        );
        assert_eq!(
            canonical("[0.30000000000000004, 9007199254740993.0]"),
            "[0.30000000000000004,9007199254740992]"
        );
    }

    #[test]
    fn key_order_is_kept_and_text_is_utf8() {
        assert_eq!(
            canonical(r#"{"z": 1, "a": {"y": "é\n\"", "b": null}}"#),
            "{\"z\":1,\"a\":{\"y\":\"é\\n\\\"\",\"b\":null}}"
        );
    }

    #[test]
    fn v2_envelope_hash_covers_the_data_sent() {
        let body = body(
            Envelope::BikeepV2,
            "alarm",
            r#"{"a": 1.0, "b": "x"}"#,
            Some("seed"),
        )
        .unwrap();
        let json_data = r#"{"a":1,"b":"x"}"#;
        assert_eq!(
            body,
            format!(
                r#"{{"type":"alarm","data":{json_data},"version":2,"hash":"{}"}}"#,
                seed_hash(json_data, "seed")
            )
        );
    }

    #[test]
    fn v1_envelope_has_no_type_and_v1_names() {
        let body = body(
            Envelope::BikeepV1,
            "connection",
            r#"{"connection": "offline"}"#,
            Some("s"),
        )
        .unwrap();
        assert!(body.starts_with(r#"{"data":{"type":"connection_changed","connection":"offline"},"version":1,"hash":""#), "{body}");
    }

    #[test]
    fn plain_envelope_is_the_event() {
        let body = body(
            Envelope::Plain,
            "customer_created",
            r#"{"customer": {"id": "c1"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            body,
            r#"{"type":"customer_created","customer":{"id":"c1"}}"#
        );
    }

    #[test]
    fn standard_webhooks_signature_matches_the_spec_example() {
        // The example from the Standard Webhooks specification.
        let key = whsec_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = standard_signature(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(whsec_key("nope").is_err());
    }
}
