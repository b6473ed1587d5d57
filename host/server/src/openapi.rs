//! The OpenAPI document at `GET /openapi.json`, made from the same route
//! table as the router: a route cannot be served without being documented,
//! or documented without being served.

use serde_json::{Value, json};

use crate::auth::Access;
use crate::route::{BodyLimit, Route};

/// The OpenAPI 3.1 document of `routes`.
pub(crate) fn document(routes: &[Route]) -> Value {
    let mut paths = serde_json::Map::new();
    for r in routes {
        let mut parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        parameters.extend(r.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": description, "schema": {"type": "string"}})
        }));
        let mut responses = serde_json::Map::new();
        for (status, description) in r.responses {
            responses.insert(status.to_string(), json!({ "description": description }));
        }
        let security = match r.access {
            Access::Open => json!([]),
            Access::Ingest => json!([{ "ingestToken": [] }, {}]),
            Access::Admin => json!([{ "adminToken": [] }]),
            Access::Portal => json!([{ "portalToken": [] }]),
        };
        if r.access != Access::Open {
            responses.insert("401".into(), json!({"description": "no bearer token"}));
            responses.insert(
                "403".into(),
                json!({"description": "wrong token, or the token of the other kind"}),
            );
        }
        let mut operation = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method, r.path),
            "parameters": parameters,
            "security": security,
            "responses": responses,
        });
        if let Some(schema) = r.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {
                    "schema": {"$ref": format!("#/components/schemas/{schema}")}
                }}
            });
        }
        if r.body_limit == BodyLimit::PluginUpload {
            operation["requestBody"] = json!({
                "required": true,
                "description": "a WebAssembly component, at most plugins.max_upload_mib",
                "content": {"application/wasm": {
                    "schema": {"type": "string", "format": "binary"}
                }}
            });
        }
        let item = paths.entry(r.path).or_insert_with(|| json!({}));
        item[r.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "hookhost",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted webhook delivery with WebAssembly plugins. Errors are JSON: {\"error\": \"...\"}."
        },
        "paths": paths,
        "components": {"schemas": schemas(), "securitySchemes": {
            "adminToken": {"type": "http", "scheme": "bearer", "description": "server.admin_token"},
            "ingestToken": {"type": "http", "scheme": "bearer", "description": "server.ingest_token (ingest is open when unset)"},
            "portalToken": {"type": "http", "scheme": "bearer", "description": "a portal link's token (POST /v1/subscriptions/{id}/portal): one subscription, until it expires"}
        }}
    })
}

/// Request bodies, field by field (what `deny_unknown_fields` accepts; the
/// server's checks say the rest in their 4xx answers).
pub(crate) fn schemas() -> Value {
    let duration_ms = |d: &str| json!({"type": "integer", "minimum": 0, "description": d});
    let event = json!({
        "type": "object",
        "required": ["type", "data"],
        "properties": {
            "id": {"type": "string", "description": "made by hookhost when absent; a seen id is answered again, not stored twice"},
            "type": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time", "description": "RFC 3339; else data.timestamp, else the arrival time"},
            "data": {"type": "object"}
        }
    });
    let mut all = json!({
        "Event": event,
        "Events": {
            "description": "one event or an array of them (all or none stored)",
            "oneOf": [{"$ref": "#/components/schemas/Event"},
                      {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}]
        },
        "PluginTrial": {
            "type": "object",
            "required": ["event"],
            "additionalProperties": false,
            "properties": {
                "event": {"$ref": "#/components/schemas/Event"},
                "config": {"description": "the plugin's config, any JSON; absent or null: none"}
            }
        },
        "TestEvent": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": false,
            "properties": {
                "type": {"type": "string"},
                "data": {"type": "object", "description": "absent: the catalog's sample for the type"}
            }
        },
        "Recover": {
            "type": "object",
            "required": ["since"],
            "additionalProperties": false,
            "properties": {"since": {"type": "string", "format": "date-time"}}
        },
        "Subscription": {
            "type": "object",
            "required": ["id", "url", "types"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string", "maxLength": 128},
                "url": {"type": "string", "format": "uri", "description": "http or https; checked against SSRF at every connect"},
                "types": {"type": "array", "items": {"type": "string"}, "description": "exact types, `prefix.*` or `*` (never hookhost.*)"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "route_only": {"type": "boolean", "default": false},
                "tier": {"enum": ["public", "partner"], "default": "public"},
                "envelope": {"enum": ["bikeep-v2", "bikeep-v1", "plain"], "default": "bikeep-v2"},
                "seed": {"type": "string", "writeOnly": true, "description": "required for bikeep-* envelopes; never shown"},
                "secrets": {"type": "array", "maxItems": 2, "items": {"type": "string", "pattern": "^whsec_"}, "writeOnly": true},
                "retiring_secrets": {"type": "array", "maxItems": 4, "description": "secrets a rotation replaced, signing until until_ms (set by rotate-secret; shown without the secret)",
                    "items": {"type": "object", "required": ["secret", "until_ms"], "properties": {
                        "secret": {"type": "string", "pattern": "^whsec_", "writeOnly": true},
                        "until_ms": {"type": "integer", "minimum": 0}
                    }}},
                "plugins": {"type": "array", "items": {
                    "type": "object", "required": ["plugin"],
                    "properties": {"plugin": {"type": "string"}, "config": {}}
                }},
                "retry": {
                    "type": "object",
                    "properties": {
                        "timeout_ms": duration_ms("per attempt (5000)"),
                        "max_retries": {"type": "integer", "minimum": 0, "default": 3},
                        "backoff": {"enum": ["fixed", "exponential"], "default": "fixed"},
                        "backoff_ms": duration_ms("the wait, or the first wait (100)"),
                        "max_backoff_ms": duration_ms("cap of exponential waits (6 h)"),
                        "retry_statuses": {"type": "array", "items": {"oneOf": [
                            {"type": "integer"}, {"type": "string", "pattern": "^[1-5]xx$"}
                        ]}, "description": "default [\"5xx\"] for bikeep-*, [\"5xx\", 429, 408] for plain"},
                        "max_retry_after_ms": duration_ms("longest wait a Retry-After may ask for (1 h); it pauses the whole subscription")
                    }
                },
                "max_in_flight": {"type": "integer", "minimum": 1, "default": 16},
                "intervals": {"type": "object", "additionalProperties": {"type": "string"}, "description": "per type: \"direct\" or a window length; \"*\" for the rest"},
                "enabled": {"type": "boolean", "default": true},
                "health": {
                    "type": "object",
                    "properties": {
                        "disable_on_gone": {"type": "boolean", "default": true},
                        "disable_after_ms": duration_ms("only failures for this long disable the endpoint (5 days)"),
                        "min_failures": {"type": "integer", "default": 10},
                        "when_disabled": {"enum": ["pause", "drop"], "default": "pause"}
                    }
                },
                "rate_limit": {
                    "type": "object", "required": ["per_second"],
                    "properties": {
                        "per_second": {"type": "number", "exclusiveMinimum": 0},
                        "burst": {"type": "integer", "minimum": 1, "default": 1}
                    }
                },
                "headers": {"type": "object", "additionalProperties": {"type": "string"}, "writeOnly": true,
                            "description": "sent with every attempt; values never shown (\"(set)\")"},
                "ordering": {
                    "type": "object", "required": ["key"],
                    "properties": {
                        "key": {"type": "string", "pattern": "^/", "description": "JSON pointer into the data as the plugins left it"},
                        "on_dead": {"enum": ["continue", "hold"], "default": "continue"}
                    }
                }
            }
        }
    });
    let fields = all["Subscription"]["properties"].clone();
    all["SubscriptionPatch"] = json!({
        "type": "object",
        "additionalProperties": false,
        "description": "a JSON merge patch (RFC 7386) of a Subscription: a field given replaces \
                        the stored one, null removes it, fields not named (seed and secrets \
                        too) are kept; id only unchanged",
        "properties": fields
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookhost_core::model::Subscription;

    /// The schema lists every field a subscription has (and only those): a
    /// subscription with every field set, read and written back, has
    /// exactly the schema's properties, nested objects too.
    #[test]
    fn the_subscription_schema_has_every_field() {
        let full = json!({
            "id": "s", "url": "https://example.com/hook", "types": ["*"], "tags": ["t"],
            "route_only": false, "tier": "public", "envelope": "plain", "seed": "x",
            "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "retiring_secrets": [{"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "until_ms": 1}],
            "plugins": [{"plugin": "p", "config": {}}],
            "retry": {"timeout_ms": 1, "max_retries": 1, "backoff": "fixed", "backoff_ms": 1,
                      "max_backoff_ms": 1, "retry_statuses": ["5xx"], "max_retry_after_ms": 1},
            "max_in_flight": 1, "intervals": {"*": "direct"}, "enabled": true,
            "health": {"disable_on_gone": true, "disable_after_ms": 1, "min_failures": 1,
                       "when_disabled": "pause"},
            "rate_limit": {"per_second": 1.0, "burst": 1},
            "headers": {"X-Key": "v"},
            "ordering": {"key": "/k", "on_dead": "hold"}
        });
        let sub: Subscription = serde_json::from_value(full).expect("every schema field is known");
        let written = serde_json::to_value(&sub).unwrap();
        let schema = &schemas()["Subscription"]["properties"];
        let keys = |v: &Value| {
            v.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(keys(&written), keys(schema));
        for nested in ["retry", "health", "rate_limit", "ordering"] {
            assert_eq!(
                keys(&written[nested]),
                keys(&schema[nested]["properties"]),
                "{nested}"
            );
        }
    }
}
