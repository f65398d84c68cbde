//! The OpenAPI 3.1 document of every route, served at `/openapi.json` and kept as
//! `spec/key-server-openapi.json` (a test keeps the two equal). Each router contributes its
//! own paths; [`document`] joins them.

use serde_json::{Map, Value, json};

use crate::error::Error;

/// The document as pretty JSON with a final newline, as kept in `spec/`.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

/// The OpenAPI 3.1 document of the server's routes.
pub fn document() -> Value {
    let mut paths = Map::new();
    for part in [
        operations_paths(),
        verification_paths(),
        staff_paths(),
        key_paths(),
    ] {
        if let Value::Object(part) = part {
            paths.extend(part);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Varsel key server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Upload codes, verification tokens and certificates \
                (spec/verification.md); key uploads and export files (spec/key-server.md). \
                Every JSON response carries a random `padding` field; \
                every JSON request accepts one and an `X-Chaff` header.",
        },
        "paths": paths,
        "components": components(),
    })
}

fn operations_paths() -> Value {
    json!({
        "/healthz": { "get": {
            "summary": "Liveness.",
            "responses": { "200": { "description": "The server runs.", "content": {
                "application/json": { "schema": { "type": "object",
                    "properties": { "status": { "const": "ok" } } } } } } },
        }},
        "/metrics": { "get": {
            "summary": "Prometheus metrics: requests by route and status, latency by route.",
            "responses": { "200": { "description": "Text exposition format 0.0.4.",
                "content": { "text/plain": { "schema": { "type": "string" } } } } },
        }},
        "/openapi.json": { "get": {
            "summary": "This document.",
            "responses": { "200": { "description": "OpenAPI 3.1.",
                "content": { "application/json": { "schema": { "type": "object" } } } } },
        }},
    })
}

fn verification_paths() -> Value {
    json!({
        "/api/issue": { "post": {
            "summary": "A health authority issues a short and a long upload code.",
            "security": [{ "apiKey": [] }],
            "parameters": [{ "$ref": "#/components/parameters/chaff" }],
            "requestBody": json_body("IssueRequest"),
            "responses": responses("IssueResponse", &["400", "401", "409", "413", "429"]),
        }},
        "/api/verify": { "post": {
            "summary": "A device exchanges a code for a verification token.",
            "parameters": [{ "$ref": "#/components/parameters/chaff" }],
            "requestBody": json_body("VerifyRequest"),
            "responses": responses("VerifyResponse", &["400", "404", "412", "413", "429"]),
        }},
        "/api/certificate": { "post": {
            "summary": "A device exchanges a token and the HMAC of its keys for a certificate.",
            "parameters": [{ "$ref": "#/components/parameters/chaff" }],
            "requestBody": json_body("CertificateRequest"),
            "responses": responses("CertificateResponse", &["400", "413"]),
        }},
        "/.well-known/jwks.json": { "get": {
            "summary": "The public keys that verify tokens and certificates (RFC 7517).",
            "responses": { "200": { "description": "A JWK set of P-256 keys.",
                "content": { "application/json": { "schema": { "type": "object" } } } } },
        }},
    })
}

fn staff_paths() -> Value {
    let page = json!({ "200": { "description": "An HTML page.",
        "content": { "text/html": { "schema": { "type": "string" } } } } });
    let form = |fields: Value| {
        json!({ "required": true, "content": {
        "application/x-www-form-urlencoded": { "schema": {
            "type": "object", "properties": fields, "required": ["csrf"] } } } })
    };
    let csrf = json!({ "type": "string" });
    json!({
        "/staff": { "get": {
            "summary": "Staff page: sign-in form, or the issuing form when signed in.",
            "responses": page,
        }},
        "/staff/login": { "post": {
            "summary": "Sign in with the authority's name and API key; sets the session cookie.",
            "requestBody": form(json!({ "name": { "type": "string" },
                "api_key": { "type": "string" }, "csrf": csrf })),
            "responses": { "303": { "description": "Signed in; go to /staff." },
                "403": { "description": "CSRF token missing or wrong." } },
        }},
        "/staff/issue": { "post": {
            "summary": "Issue a code from the staff page; the page shows it and its expiry.",
            "requestBody": form(json!({
                "test_type": { "enum": ["confirmed", "likely", "negative"] },
                "symptom_date": { "type": "string" }, "test_date": { "type": "string" },
                "tz_offset": { "type": "integer" }, "csrf": csrf })),
            "responses": { "200": page["200"].clone(),
                "403": { "description": "CSRF token missing or wrong." } },
        }},
        "/staff/logout": { "post": {
            "summary": "End the session.",
            "requestBody": form(json!({ "csrf": csrf })),
            "responses": { "303": { "description": "Signed out; go to /staff." } },
        }},
    })
}

/// The key side: `POST /v1/publish` and the export tree (`spec/key-server.md`).
fn key_paths() -> Value {
    let padding = json!({ "type": "string", "description": "Random; ignored." });
    let key = json!({ "type": "object", "additionalProperties": false,
        "required": ["key", "rollingStartNumber", "rollingPeriod", "transmissionRisk"],
        "properties": {
            "key": { "type": "string", "description": "Base64 of 16 bytes." },
            "rollingStartNumber": { "type": "integer", "minimum": 0 },
            "rollingPeriod": { "type": "integer", "minimum": 1, "maximum": 144 },
            "transmissionRisk": { "type": "integer", "minimum": 0, "maximum": 8 } } });
    let request = json!({ "type": "object", "additionalProperties": false,
        "required": ["temporaryExposureKeys", "healthAuthorityID", "verificationPayload",
            "hmacKey"],
        "properties": {
            "temporaryExposureKeys": { "type": "array", "items": key, "minItems": 1,
                "maxItems": 30 },
            "healthAuthorityID": { "type": "string" },
            "verificationPayload": { "type": "string", "description": "The certificate." },
            "hmacKey": { "type": "string", "description": "Base64 of 16-128 bytes." },
            "symptomOnsetInterval": { "type": ["integer", "null"] },
            "traveler": { "type": ["boolean", "null"] },
            "revisionToken": { "type": ["string", "null"] },
            "padding": padding } });
    let answer = json!({ "type": "object", "properties": {
        "insertedExposures": { "type": "integer" },
        "revisionToken": { "type": "string" },
        "code": { "const": "partial_failure" },
        "error": { "type": "string" },
        "droppedKeys": { "type": "array", "items": { "type": "object", "properties": {
            "index": { "type": "integer" }, "code": { "type": "string" } } } },
        "padding": padding } });
    let stored = json!({ "description": "Stored and on disk.",
        "content": { "application/json": { "schema": answer } } });
    json!({
        "/v1/publish": { "post": {
            "summary": "A device uploads its keys with a certificate.",
            "parameters": [{ "$ref": "#/components/parameters/chaff" }],
            "requestBody": { "required": true,
                "content": { "application/json": { "schema": request } } },
            "responses": responses_with(stored, &["400", "413"]),
        }},
        "/exports/{path}": { "get": {
            "summary": "The export tree: index.txt (no-cache) and REGION/START-END.zip \
                (immutable).",
            "parameters": [{ "name": "path", "in": "path", "required": true,
                "schema": { "type": "string" } }],
            "responses": {
                "200": { "description": "The file.", "content": {
                    "text/plain": { "schema": { "type": "string" } },
                    "application/zip": { "schema": { "type": "string",
                        "format": "binary" } } } },
                "404": { "description": "No such file." } },
        }},
    })
}

fn json_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": {
        "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// A success answering the named schema, and refusals with the given statuses.
fn responses(schema: &str, errors: &[&str]) -> Value {
    let success = json!({ "description": "Success.", "content": {
        "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    responses_with(success, errors)
}

/// The `200` answer `success`, and refusals with the given statuses.
fn responses_with(success: Value, errors: &[&str]) -> Value {
    let mut all = Map::new();
    all.insert("200".to_owned(), success);
    for status in errors {
        all.insert(
            (*status).to_owned(),
            json!({ "description": "Refused; see `code`.",
            "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(all)
}

fn components() -> Value {
    let padding = json!({ "type": "string", "description": "Random; ignored." });
    let date = json!({ "type": ["string", "null"], "format": "date" });
    let test_type = json!({ "enum": ["confirmed", "likely", "negative"] });
    json!({
        "securitySchemes": { "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" } },
        "parameters": { "chaff": { "name": "X-Chaff", "in": "header", "required": false,
            "description": "Any value marks a chaff request: same answer shape, no state change.",
            "schema": { "type": "string" } } },
        "schemas": {
            "IssueRequest": { "type": "object", "additionalProperties": false,
                "required": ["testType"], "properties": {
                    "testType": test_type, "symptomDate": date, "testDate": date,
                    "tzOffset": { "type": "integer", "minimum": -720, "maximum": 840 },
                    "uuid": { "type": "string", "maxLength": 64 }, "padding": padding } },
            "IssueResponse": { "type": "object", "properties": {
                "code": { "type": "string", "pattern": "^[0-9]{8}$" },
                "expiresAtTimestamp": { "type": "integer" },
                "longCode": { "type": "string", "pattern": "^[a-z0-9]{16}$" },
                "longExpiresAtTimestamp": { "type": "integer" },
                "uuid": { "type": ["string", "null"] }, "padding": padding } },
            "VerifyRequest": { "type": "object", "additionalProperties": false,
                "required": ["code"], "properties": {
                    "code": { "type": "string" },
                    "accept": { "type": "array", "items": test_type, "minItems": 1,
                        "maxItems": 3, "default": ["confirmed"] },
                    "padding": padding } },
            "VerifyResponse": { "type": "object", "properties": {
                "testtype": test_type, "symptomDate": date, "testDate": date,
                "token": { "type": "string", "description": "ES256 JWT, 24 h, single use." },
                "padding": padding } },
            "CertificateRequest": { "type": "object", "additionalProperties": false,
                "required": ["token", "ekeyhmac"], "properties": {
                    "token": { "type": "string" },
                    "ekeyhmac": { "type": "string", "description": "Base64 of 32 bytes." },
                    "padding": padding } },
            "CertificateResponse": { "type": "object", "properties": {
                "certificate": { "type": "string", "description": "ES256 JWT, 15 min." },
                "padding": padding } },
            "Error": { "type": "object", "properties": {
                "error": { "type": "string" },
                "code": { "enum": Error::CODES },
                "padding": padding } },
        },
    })
}
