//! The OpenAPI document at `GET /openapi.json`, made from the same route
//! table as the router: a route cannot be served without being documented,
//! or documented without being served.

use serde_json::{Value, json};

use crate::auth::Access;
use crate::route::Route;

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
        if r.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {}}}
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
        "components": {"securitySchemes": {
            "adminToken": {"type": "http", "scheme": "bearer", "description": "server.admin_token"},
            "ingestToken": {"type": "http", "scheme": "bearer", "description": "server.ingest_token (ingest is open when unset)"}
        }}
    })
}
