//! `GET /openapi.json`: an OpenAPI 3.1 description of the API, written out
//! by hand (it is small) so clients can be generated. A test checks that it
//! lists every route the router serves.

use axum::Json;
use serde_json::{Value, json};

/// Every (method, path) the API serves, as the document names them.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("post", "/v1/jobs/{id}/retry"),
    ("get", "/v1/jobs/{id}/images/{n}"),
    ("get", "/v1/keys"),
    ("post", "/v1/uploads"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// The document.
pub async fn document() -> Json<Value> {
    Json(spec())
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

/// The OpenAPI document as JSON.
pub fn spec() -> Value {
    let job_ref = json!({ "$ref": "#/components/schemas/Job" });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "genq", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Image-generation jobs run at the rate each API key allows." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
                "NewJob": {
                    "type": "object", "required": ["prompt"], "additionalProperties": false,
                    "properties": {
                        "prompt": { "type": "string" },
                        "model": { "type": "string", "default": "gpt-image-2" },
                        "queue": { "type": "string", "default": "default" },
                        "params": { "type": "object", "description": "size, quality, n, background, output_format, output_compression, moderation, input_fidelity (edits), fallback_models" },
                        "priority": { "type": "integer", "minimum": 0, "maximum": 1000, "default": 0 },
                        "run_at": { "type": "string", "format": "date-time" },
                        "max_attempts": { "type": "integer", "minimum": 1, "maximum": 100, "default": 5 },
                        "idempotency_key": { "type": "string" },
                        "expires_at": { "type": "string", "format": "date-time" },
                        "operation": { "enum": ["generate", "edit"], "description": "default: edit when inputs are given, else generate" },
                        "inputs": { "type": "array", "maxItems": 16, "items": { "$ref": "#/components/schemas/Input" }, "description": "an edit's images, in order" },
                        "mask": { "$ref": "#/components/schemas/Input" },
                        "callback_url": { "type": "string", "format": "uri", "description": "POST the job's JSON here when it ends, signed (Standard Webhooks); else the queue's GENQ_WEBHOOK_URL" }
                    }
                },
                "Input": {
                    "type": "object", "additionalProperties": false,
                    "description": "exactly one of upload, url, from_job (index: which image of that job, default 0)",
                    "properties": {
                        "upload": { "type": "string", "format": "uuid" },
                        "url": { "type": "string", "format": "uri" },
                        "from_job": { "type": "string", "format": "uuid" },
                        "index": { "type": "integer", "minimum": 0, "maximum": 9 }
                    }
                },
                "Job": { "type": "object", "properties": {
                    "id": { "type": "string", "format": "uuid" }, "state": { "enum": ["queued", "running", "succeeded", "failed", "cancelled"] },
                    "model": { "type": "string" }, "prompt": { "type": "string" }, "params": { "type": "object" },
                    "operation": { "enum": ["generate", "edit"] }, "awaiting_input": { "type": "boolean", "description": "queued, waiting for an input job to succeed" },
                    "attempts": { "type": "integer" }, "result": { "type": ["object", "null"] }, "last_error": { "type": ["string", "null"] }
                } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Enqueue a job",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewJob" } } } },
                    "responses": {
                        "201": { "description": "created: {id, state, created}" },
                        "200": { "description": "the idempotency key was seen before with the same job: the first job's {id, state}" },
                        "400": error_response("invalid job: the message says what to fix"),
                        "409": error_response("the idempotency key was used for a different job: the message names the fields that differ"),
                        "413": error_response("body larger than 512 KiB"),
                        "401": error_response("missing or wrong bearer token")
                    }
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        { "name": "state", "in": "query", "schema": { "enum": ["queued", "running", "succeeded", "failed", "cancelled"] } },
                        { "name": "since", "in": "query", "schema": { "type": "string" }, "description": "30s, 15m, 1h, 7d or an RFC 3339 time" },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } },
                        { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "next_cursor of the previous page (same filters): the jobs after its last one" }
                    ],
                    "responses": { "200": { "description": "{jobs: [Job], next_cursor: string or null}: newest first (created_at, then id, descending); next_cursor is set when the page is full" }, "400": error_response("bad filter or cursor") }
                }
            },
            "/v1/jobs/{id}": { "get": {
                "summary": "A job and every attempt", "parameters": [id_param()],
                "responses": { "200": { "description": "{job, attempts, cost_usd, waiting, inputs, webhooks}: each attempt with its cost_usd, cost_source and tokens; waiting says why a queued job waits (keys, an input job, a budget)", "content": { "application/json": { "schema": { "type": "object", "properties": { "job": job_ref } } } } },
                               "404": error_response("no such job") }
            } },
            "/v1/jobs/{id}/cancel": { "post": {
                "summary": "Cancel a queued job", "parameters": [id_param()],
                "responses": { "200": { "description": "{job}" }, "404": error_response("no such job"), "409": error_response("not queued: the reason") }
            } },
            "/v1/jobs/{id}/retry": { "post": {
                "summary": "Queue a failed or cancelled job again with fresh attempts", "parameters": [id_param()],
                "responses": { "200": { "description": "{job}" }, "404": error_response("no such job"), "409": error_response("not failed or cancelled") }
            } },
            "/v1/jobs/{id}/images/{n}": { "get": {
                "summary": "Image n (from 0) of a succeeded job: streamed with its media type, or a redirect to a presigned URL when images are in object storage",
                "parameters": [id_param(), { "name": "n", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0 } }],
                "responses": {
                    "200": { "description": "the image", "content": { "image/png": {}, "image/jpeg": {}, "image/webp": {} } },
                    "307": { "description": "images are in object storage: Location is a presigned URL valid 5 minutes" },
                    "404": error_response("no such job or image"),
                    "409": error_response("the job has not succeeded"),
                    "410": error_response("the file or object is not in this server's output store")
                }
            } },
            "/v1/keys": { "get": {
                "summary": "API keys by id: state, cooldown, counters, limits (never secrets)",
                "responses": { "200": { "description": "{keys: [...]}" } }
            } },
            "/v1/uploads": { "post": {
                "summary": "Upload one input image for edits (PNG, JPEG or WebP, at most 50 MiB, judged by its bytes)",
                "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": { "type": "object", "required": ["file"], "properties": { "file": { "type": "string", "format": "binary" } } } } } },
                "responses": {
                    "201": { "description": "{id, content_type, bytes, sha256, file_name, created_at}: name the id in a job's inputs or mask" },
                    "400": error_response("not one PNG, JPEG or WebP file: the message says what it is"),
                    "413": error_response("larger than 50 MiB")
                }
            } },
            "/healthz": { "get": { "summary": "Database reachable?", "security": [],
                "responses": { "200": { "description": "{status: ok}" }, "503": error_response("database unreachable") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [],
                "responses": { "200": { "description": "Prometheus text format", "content": { "text/plain": {} } } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_lists_every_route() {
        let spec = super::spec();
        for (method, path) in super::ROUTES {
            assert!(
                spec["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
        let listed: usize = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(listed, super::ROUTES.len());
    }
}
