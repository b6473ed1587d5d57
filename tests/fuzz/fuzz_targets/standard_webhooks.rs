//! The Standard Webhooks verifier (`hookhost verify` / `receive`): any
//! headers and body give a verdict, never a panic; a delivery signed by
//! hookhost's signer verifies, and one with its body changed does not.
#![no_main]

use std::collections::BTreeMap;

use hookhost_core::sign::{standard_signature, whsec_key};
use hookhost_core::verify::{Delivery, standard};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{0}');
    let (id, timestamp, signature, body) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let headers = |signature: &str, timestamp: &str| {
        BTreeMap::from([
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".to_string(), timestamp.to_string()),
            ("webhook-signature".to_string(), signature.to_string()),
        ])
    };
    // Whatever arrives gets a verdict.
    let _ = standard(
        &Delivery {
            body: body.to_string(),
            headers: headers(signature, timestamp),
        },
        SECRET,
    );
    let _ = standard(
        &Delivery {
            body: body.to_string(),
            headers: headers(signature, timestamp),
        },
        signature,
    );
    // What hookhost signs verifies; the same signature on another body not.
    let key = whsec_key(SECRET).expect("valid secret");
    let at = 1_765_794_600u64;
    let signed = standard_signature(&[key], id, at, body);
    let ok = standard(
        &Delivery {
            body: body.to_string(),
            headers: headers(&signed, &at.to_string()),
        },
        SECRET,
    );
    assert!(ok.ok, "{ok:?}");
    let altered = standard(
        &Delivery {
            body: format!("{body} "),
            headers: headers(&signed, &at.to_string()),
        },
        SECRET,
    );
    assert!(!altered.ok, "{altered:?}");
});
