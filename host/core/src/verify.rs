//! Checking a delivery as a receiver would: the seed's hash
//! (`SHA256(JSON(data) + seed)`) and Standard Webhooks signatures. Used by
//! `hookhost receive` and `hookhost verify`; independent of how `sign`
//! built the delivery except for the shared JSON(data) form (JavaScript's
//! `JSON.stringify`, which the seed's Node verifier uses).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::sign;

/// A delivery as received: its body and headers (names lowercased).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One check's result, for printing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The seed's hash check: recomputes `hex(SHA256(JSON(data) + seed))`.
pub fn seed_hash(body: &str, seed: &str) -> Check {
    let fail = |detail: String| Check {
        name: "seed hash",
        ok: false,
        detail,
    };
    let Ok(payload) = serde_json::from_str::<Value>(body) else {
        return fail("body is not JSON".into());
    };
    let (Some(data), Some(hash)) = (
        payload.get("data"),
        payload.get("hash").and_then(Value::as_str),
    ) else {
        return fail("body has no `data` and `hash` (not a bikeep envelope)".into());
    };
    let mut json_data = String::new();
    sign::write_canonical(&mut json_data, data);
    let expected = sign::seed_hash(&json_data, seed);
    if sign::constant_time_eq(expected.as_bytes(), hash.as_bytes()) {
        Check {
            name: "seed hash",
            ok: true,
            detail: "SHA256(JSON(data) + seed) matches `hash`".into(),
        }
    } else {
        fail("`hash` does not match SHA256(JSON(data) + seed): wrong seed or altered body".into())
    }
}

/// The Standard Webhooks check: one of the `v1,` signatures in
/// `webhook-signature` must be the HMAC of `id.timestamp.body` under `secret`.
pub fn standard(delivery: &Delivery, secret: &str) -> Check {
    let fail = |detail: String| Check {
        name: "standard webhooks",
        ok: false,
        detail,
    };
    let key = match sign::whsec_key(secret) {
        Ok(k) => k,
        Err(e) => return fail(format!("secret: {e}")),
    };
    let header = |name: &str| delivery.headers.get(name).map(String::as_str);
    let (Some(id), Some(ts), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return fail("missing webhook-id, webhook-timestamp or webhook-signature".into());
    };
    let Ok(ts) = ts.parse::<u64>() else {
        return fail(format!("webhook-timestamp {ts:?} is not a number"));
    };
    let expected = sign::standard_signature(&[key], id, ts, &delivery.body);
    let matched = signatures
        .split_whitespace()
        .any(|s| sign::constant_time_eq(s.as_bytes(), expected.as_bytes()));
    if matched {
        Check {
            name: "standard webhooks",
            ok: true,
            detail: format!("v1 signature of webhook-id {id} matches"),
        }
    } else {
        fail("no v1 signature matches this secret".into())
    }
}

/// Every check the given secrets allow.
pub fn check(delivery: &Delivery, seed: Option<&str>, secrets: &[String]) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(seed) = seed {
        checks.push(seed_hash(&delivery.body, seed));
    }
    for secret in secrets {
        checks.push(standard(delivery, secret));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Envelope;

    #[test]
    fn a_signed_body_verifies_and_a_changed_one_does_not() {
        let body = sign::body(
            Envelope::BikeepV2,
            "alarm",
            r#"{"n":1.0,"s":"x"}"#,
            Some("seed"),
        )
        .unwrap();
        assert!(seed_hash(&body, "seed").ok);
        assert!(!seed_hash(&body, "other").ok);
        assert!(!seed_hash(&body.replace("\"x\"", "\"y\""), "seed").ok);

        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = sign::whsec_key(secret).unwrap();
        let delivery = Delivery {
            headers: BTreeMap::from([
                ("webhook-id".into(), "msg_1".into()),
                ("webhook-timestamp".into(), "1700000000".into()),
                (
                    "webhook-signature".into(),
                    sign::standard_signature(&[key], "msg_1", 1700000000, &body),
                ),
            ]),
            body,
        };
        assert!(standard(&delivery, secret).ok);
        assert!(!standard(&delivery, "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=").ok);
    }
}
