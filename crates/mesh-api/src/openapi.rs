//! The OpenAPI 3.1 document of the API, served at `GET /v1/openapi.json`.
//!
//! Written by hand next to the routes; a test checks that it lists exactly the routes the
//! server answers.

use serde_json::{Value, json};

fn error_responses(codes: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => "malformed request (bad JSON, unknown field, bad query, bad hex)",
            "401" => "a bearer token is required (the node was given one)",
            "404" => "no such route",
            "409" => {
                "this node runs no consensus (not a validator), or this server is not an agent"
            }
            "413" => "body over the limit",
            "503" => "busy (too many requests, streams or waiting clients) or stopped",
            "504" => "not committed in time (the request may still commit)",
            _ => "error",
        };
        map.insert(
            (*code).to_owned(),
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            }),
        );
    }
    Value::Object(map)
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The document.
pub fn document() -> Value {
    let common = ["401", "503"];
    let with = |extra: &[&str]| {
        let mut all: Vec<&str> = common.to_vec();
        all.extend_from_slice(extra);
        error_responses(&all)
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "agentmesh node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of an agentmesh node. Binary values are lowercase hex. \
                Every error answer has a JSON ErrorBody."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/v1/status": {"get": {
                "summary": "The node's status",
                "operationId": "status",
                "responses": merge(json!({"200": ok("the status", schema("NodeStatus"))}), with(&[]))
            }},
            "/v1/peers": {"get": {
                "summary": "Peers connected now",
                "operationId": "peers",
                "responses": merge(
                    json!({"200": ok("the peers", json!({"type": "array", "items": schema("Peer")}))}),
                    with(&[]))
            }},
            "/v1/consensus/requests": {"post": {
                "summary": "Submit a request to consensus; answers once it has executed",
                "operationId": "submit",
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("SubmitRequest")}}},
                "responses": merge(
                    json!({"200": ok("where it executed", schema("Receipt"))}),
                    with(&["400", "409", "413", "504"]))
            }},
            "/v1/ledger": {"get": {
                "summary": "Committed blocks from a height on",
                "operationId": "ledger",
                "parameters": [
                    {"name": "from", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 100},
                     "description": "capped at the server's maximum (256 by default)"}
                ],
                "responses": merge(json!({"200": ok("the blocks", schema("Ledger"))}), with(&["400", "409"]))
            }},
            "/v1/events": {"get": {
                "summary": "A WebSocket stream of events, one JSON text message each (schema Event)",
                "operationId": "events",
                "responses": merge(
                    json!({"101": {"description": "switching to the WebSocket protocol"}}),
                    with(&["400"]))
            }},
            "/v1/members": {"get": {
                "summary": "The node's membership view (SWIM): every known peer's state and incarnation",
                "operationId": "members",
                "responses": merge(json!({"200": ok("the members", json!({"type": "array", "items": schema("Member")}))}), with(&["404"]))
            }},
            "/v1/agents": {"get": {
                "summary": "Agents registered through consensus (served by nodes)",
                "operationId": "agents",
                "responses": merge(json!({"200": ok("the registrations", json!({"type": "array", "items": schema("AgentInfo")}))}), with(&["404"]))
            }},
            "/v1/messages": {
                "get": {
                    "summary": "Received (or sent) end-to-end encrypted messages (served by agents)",
                    "operationId": "messages",
                    "parameters": [
                        {"name": "from", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 100}},
                        {"name": "box", "in": "query", "schema": {"enum": ["inbox", "outbox"], "default": "inbox"}}
                    ],
                    "responses": merge(json!({"200": ok("the messages", schema("Messages"))}), with(&["400", "409"]))
                },
                "post": {
                    "summary": "Send an end-to-end encrypted, signed message to another agent (served by agents)",
                    "operationId": "sendMessage",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema("SendMessage")}}},
                    "responses": merge(json!({"200": ok("stored; delivered until acknowledged", schema("MessageReceipt"))}),
                        with(&["400", "404", "409", "413", "504"]))
                }
            },
            "/v1/learning/runs": {
                "get": {
                    "summary": "Federated runs this node knows of (served by validators)",
                    "operationId": "runs",
                    "responses": merge(json!({"200": ok("the runs", json!({"type": "array", "items": schema("RunInfo")}))}), with(&["404"]))
                },
                "post": {
                    "summary": "Start a federated run over the validators through consensus; answers once its record executed",
                    "operationId": "startRun",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema("StartRun")}}},
                    "responses": merge(json!({"200": ok("the run, committed", schema("RunInfo"))}),
                        with(&["400", "404", "409", "413", "503", "504"]))
                }
            },
            "/v1/learning/runs/{id}": {"get": {
                "summary": "One federated run (its id, or a prefix of at least 8 hex digits)",
                "operationId": "run",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": merge(json!({"200": ok("the run", schema("RunInfo"))}), with(&["404"]))
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": merge(json!({"200": {"description": "the OpenAPI document"}}), with(&[]))
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (OpenMetrics text)",
                "operationId": "metrics",
                "responses": merge(
                    json!({"200": {"description": "the metrics", "content": {"application/openmetrics-text": {}}}}),
                    with(&[]))
            }}
        }
    })
}

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let int = json!({"type": "integer", "minimum": 0});
    let boolean = json!({"type": "boolean"});
    json!({
        "ErrorBody": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": string, "message": string}}}},
        "Counter": {"type": "object", "required": ["name", "value"], "properties": {"name": string, "value": int}},
        "ConsensusStatus": {"type": "object", "properties": {
            "node": string, "view": int, "changing_view": boolean, "primary": string, "height": int,
            "head": string, "low_watermark": int, "epoch": int, "voter": boolean, "connected": int,
            "waiting": int, "counters": {"type": "array", "items": schema("Counter")}}},
        "NodeStatus": {"type": "object", "properties": {
            "peer_id": string, "did": string, "version": string, "uptime_s": int,
            "listen": {"type": "array", "items": string}, "peers": int,
            "consensus": {"oneOf": [schema("ConsensusStatus"), {"type": "null"}]}}},
        "Peer": {"type": "object", "required": ["peer_id"], "properties": {"peer_id": string}},
        "SubmitRequest": {"type": "object", "additionalProperties": false,
            "description": "exactly one of text and hex",
            "properties": {"text": string, "hex": {"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"}}},
        "Receipt": {"type": "object", "required": ["client", "id", "height", "view"], "properties": {
            "client": string, "id": int, "height": int, "view": int}},
        "LedgerRequest": {"type": "object", "required": ["client", "id", "kind", "hex"], "properties": {
            "client": string, "id": int, "kind": {"enum": ["app", "change"]}, "hex": string, "text": string}},
        "LedgerBlock": {"type": "object", "properties": {
            "height": int, "view": int, "digest": string, "prev": string,
            "signers": {"type": "array", "items": int},
            "requests": {"type": "array", "items": schema("LedgerRequest")}}},
        "Ledger": {"type": "object", "required": ["blocks", "height"], "properties": {
            "blocks": {"type": "array", "items": schema("LedgerBlock")}, "height": int}},
        "Member": {"type": "object", "required": ["peer_id", "state", "incarnation"], "properties": {
            "peer_id": string, "state": {"enum": ["alive", "suspected", "dead", "left"]}, "incarnation": int}},
        "AgentInfo": {"type": "object", "required": ["did", "name", "capabilities", "addrs", "node", "issued_ms"], "properties": {
            "did": string, "name": string, "capabilities": {"type": "array", "items": string},
            "addrs": {"type": "array", "items": string}, "node": string, "issued_ms": int}},
        "SendMessage": {"type": "object", "required": ["to", "text"], "additionalProperties": false, "properties": {
            "to": string, "text": string, "kind": {"type": "string", "pattern": "^[a-z0-9._/-]{1,64}$", "default": "chat"}}},
        "MessageReceipt": {"type": "object", "required": ["id", "seq"], "properties": {"id": string, "seq": int}},
        "MessageView": {"type": "object", "required": ["seq", "id", "peer", "kind", "timestamp_ms", "hex"], "properties": {
            "seq": int, "id": string, "peer": string, "kind": string, "timestamp_ms": int, "text": string, "hex": string}},
        "Messages": {"type": "object", "required": ["messages", "total"], "properties": {
            "messages": {"type": "array", "items": schema("MessageView")}, "total": int}},
        "StartRun": {"type": "object", "additionalProperties": false, "properties": {
            "model": {"enum": ["logistic", "mlp", "cnn"], "default": "mlp"},
            "rounds": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
            "epochs": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
            "learning_rate": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
            "top_k": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "seed": int,
            "round_timeout_s": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 30}}},
        "RoundInfo": {"type": "object", "required": ["round", "model", "accuracy", "height"], "properties": {
            "round": int, "model": string, "accuracy": {"type": "number"}, "height": int}},
        "RunInfo": {"type": "object", "required": ["id", "model", "rounds", "roles", "height", "state", "finished_rounds"], "properties": {
            "id": string, "model": string, "rounds": int, "roles": {"type": "array", "items": string},
            "height": int, "state": {"enum": ["running", "finished", "failed"]}, "error": string,
            "finished_rounds": {"type": "array", "items": schema("RoundInfo")}}},
        "Event": {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": ["peer_up", "peer_down", "block_committed", "member", "alert", "message_received", "round_finished", "lagged"]},
            "run": string, "round": int, "model": string, "accuracy": {"type": "number"},
            "peer_id": string, "height": int, "view": int, "requests": int, "executed": int,
            "state": string, "incarnation": int, "name": string, "value": {"type": "number"},
            "id": string, "from": string, "kind": string, "seq": int, "missed": int}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_served_routes() {
        let doc = document();
        let operations: usize = doc["paths"]
            .as_object()
            .map(|p| {
                p.values()
                    .filter_map(Value::as_object)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(operations, crate::server::ROUTES.len());
        for (method, path) in crate::server::ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is missing from the OpenAPI document"
            );
        }
        // Every schema reference resolves.
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                doc["components"]["schemas"][&name].is_object(),
                "dangling $ref {name}"
            );
        }
    }
}
