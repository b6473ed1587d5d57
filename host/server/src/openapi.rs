//! The OpenAPI document at `GET /openapi.json`, made from the same route
//! table as the router: a route cannot be served without being documented,
//! or documented without being served.

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Value, json};

use hookhost_core::model::Subscription;

use crate::answers::ErrorAnswer;
use crate::auth::Access;
use crate::route::{BodyLimit, Route};

/// The OpenAPI 3.1 document of `routes`.
pub(crate) fn document(routes: &[Route]) -> Value {
    let mut generator = generator();
    let error = generator.subschema_for::<ErrorAnswer>().to_value();
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
            let mut response = json!({ "description": description });
            let schema = match status {
                // A success with a body is the route's typed answer.
                200..=299 if *status != 204 => {
                    r.answer.map(|answer| answer(&mut generator).to_value())
                }
                400.. => Some(error.clone()),
                _ => None,
            };
            if let Some(schema) = schema {
                response["content"] = json!({"application/json": {"schema": schema}});
            }
            responses.insert(status.to_string(), response);
        }
        let security = match r.access {
            Access::Open => json!([]),
            Access::Ingest => json!([{ "ingestToken": [] }, {}]),
            Access::Admin => json!([{ "adminToken": [] }]),
            Access::Portal => json!([{ "portalToken": [] }]),
        };
        if r.access != Access::Open {
            let refusal = |description: &str| {
                json!({"description": description,
                       "content": {"application/json": {"schema": error.clone()}}})
            };
            responses.insert("401".into(), refusal("no bearer token"));
            responses.insert(
                "403".into(),
                refusal("wrong token, or the token of the other kind"),
            );
        }
        let mut operation = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method, r.path),
            "parameters": parameters,
            "security": security,
            "responses": responses,
        });
        if let Some(body) = r.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": body(&mut generator)}}
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
        "components": {"schemas": generator.take_definitions(true), "securitySchemes": {
            "adminToken": {"type": "http", "scheme": "bearer", "description": "server.admin_token"},
            "ingestToken": {"type": "http", "scheme": "bearer", "description": "server.ingest_token (ingest is open when unset)"},
            "portalToken": {"type": "http", "scheme": "bearer", "description": "a portal link's token (POST /v1/subscriptions/{id}/portal): one subscription, until it expires"}
        }}
    })
}

/// The generator of every schema in the document: JSON Schema 2020-12 (what
/// OpenAPI 3.1 uses), definitions under `components/schemas`, described as
/// the API reads them (a field with a default is optional; answers always
/// carry it, which the schema allows).
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.contract = Contract::Deserialize;
        })
        .into_generator()
}

/// A JSON merge patch (RFC 7386) of a [`Subscription`]: its fields, none
/// required (a field given replaces the stored one, null removes it,
/// fields not named, seed and secrets too, are kept; the id only unchanged).
pub(crate) struct SubscriptionPatch;

impl JsonSchema for SubscriptionPatch {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SubscriptionPatch".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = Subscription::json_schema(generator);
        schema.remove("required");
        schema.insert(
            "description".into(),
            "a JSON merge patch (RFC 7386) of a Subscription: a field given replaces the \
             stored one, null removes it, fields not named (seed and secrets too) are kept; \
             id only unchanged"
                .into(),
        );
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated Subscription schema has every field a subscription
    /// has (and only those), nested objects too: what serde reads is what
    /// the document says, because both come from the type.
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
        let sub: Subscription = serde_json::from_value(full).expect("every field is known");
        let written = serde_json::to_value(&sub).unwrap();
        let doc = document(&crate::routes::all());
        let components = &doc["components"]["schemas"];
        // `$ref`s point into the components; an `Option` is `anyOf [T, null]`.
        let resolve = |schema: &Value| -> Value {
            let schema = schema.get("anyOf").and_then(|a| a.get(0)).unwrap_or(schema);
            match schema["$ref"].as_str() {
                Some(r) => components[r.trim_start_matches("#/components/schemas/")].clone(),
                None => schema.clone(),
            }
        };
        let keys = |v: &Value| {
            v.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
        };
        let schema = &components["Subscription"];
        assert_eq!(keys(&written), keys(&schema["properties"]));
        assert_eq!(
            schema["additionalProperties"], false,
            "unknown fields are refused"
        );
        for nested in ["retry", "health", "rate_limit", "ordering"] {
            let field = resolve(&schema["properties"][nested]);
            assert_eq!(
                keys(&written[nested]),
                keys(&field["properties"]),
                "{nested}"
            );
        }
        // Requests and answers both name their schemas.
        let subscriptions = &doc["paths"]["/v1/subscriptions"]["post"];
        assert_eq!(
            subscriptions["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Subscription"
        );
        assert_eq!(
            subscriptions["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/SubscriptionView"
        );
        assert!(components["SubscriptionView"]["properties"]["secrets"].is_null());
    }
}
