//! Fuzz target `json_body`: the reader of register and login bodies, from
//! the headers through the JSON to the two credentials, takes any headers
//! and bytes without a panic, answers `400` or `413` in the error shape of
//! the OpenAPI document, and reads every well-formed body.
//! Seeds: `tests/fuzz/corpus/json_body/` (see `adapters::fuzzing`).

use std::sync::LazyLock;

use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{MAX_BODY_BYTES, OPENAPI, credentials_in, error_response, json_body, json_headers};
use crate::adapters::fuzzing::{
    corpus, mutated_corpus, mutation, object_of, odd_string, with_raw_tokens,
};

const TARGET: &str = "json_body";

const FIELDS: &[&str] = &["username", "password"];

/// What the reader makes of a request: the credentials, or the error's
/// status and body.
type Outcome = Result<(String, String), (StatusCode, Value)>;

fn read(headers: &HeaderMap, body: &[u8]) -> Outcome {
    json_headers(headers)
        .and_then(|()| json_body(body))
        .and_then(|map| credentials_in(&map))
        .map_err(|e| {
            let res = error_response(&e);
            let status = res.status();
            let bytes = futures::executor::block_on(res.into_body().collect())
                .expect("a full body")
                .to_bytes();
            (status, serde_json::from_slice(&bytes).expect("JSON error"))
        })
}

/// The OpenAPI document's `Error` schema.
static ERROR_SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(OPENAPI).expect("the OpenAPI document is JSON");
    let schema = json!({
        "$ref": "#/components/schemas/Error",
        "components": doc["components"],
    });
    jsonschema::validator_for(&schema).expect("a valid schema")
});

fn headers(content_type: Option<&[u8]>, content_length: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = content_type.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = content_length.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    headers
}

fn json_headers_for(content_type: &str) -> HeaderMap {
    headers(Some(content_type.as_bytes()), None)
}

/// The properties every request must have, whatever it holds.
fn check(headers: &HeaderMap, body: &[u8]) -> Result<(), TestCaseError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match read(headers, body) {
        Ok((username, password)) => {
            let mime = headers[header::CONTENT_TYPE].to_str().expect("text");
            prop_assert!(
                mime.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json"),
                "read with Content-Type {mime:?}"
            );
            prop_assert!(declared.is_none_or(|n| n <= MAX_BODY_BYTES as u64));
            let value: Value = serde_json::from_slice(body).expect("read as JSON");
            prop_assert_eq!(&value["username"], &json!(username));
            prop_assert_eq!(&value["password"], &json!(password));
        }
        Err((status, error)) => {
            let code = error["error"]["code"].as_str().unwrap_or_default();
            prop_assert!(
                (status, code) == (StatusCode::BAD_REQUEST, "bad_request")
                    || (status, code) == (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                "{status} {error}"
            );
            if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
                prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            }
            prop_assert!(
                ERROR_SCHEMA.is_valid(&error),
                "not the Error schema: {error}"
            );
        }
    }
    Ok(())
}

fn good_field(name: &str) -> Value {
    match name {
        "username" => json!("alice"),
        _ => json!("password123"),
    }
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    let known = prop::sample::select(vec![
        "application/json",
        "APPLICATION/JSON; charset=utf-8",
        " application/json ",
        "application/json;",
        "application/json ; x=\"y;z\"",
        "application/jsonx",
        "application/json-patch+json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
    ]);
    prop_oneof![
        6 => known.prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

fn content_length() -> impl Strategy<Value = Option<String>> {
    let known = prop::sample::select(vec![
        "0",
        "65536",
        "65537",
        "18446744073709551616",
        "-1",
        "+5",
        " 5",
        "abc",
    ]);
    prop_oneof![
        4 => Just(None),
        1 => known.prop_map(|s| Some(s.to_owned())),
        1 => any::<u64>().prop_map(|n| Some(n.to_string())),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let built = (object_of(FIELDS, good_field), mutation(FIELDS))
        .prop_map(|(c, edit)| edit.apply(&with_raw_tokens(&Value::Object(c))).into_bytes());
    prop_oneof![
        4 => built,
        2 => mutated_corpus(TARGET, FIELDS).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn the_error_schema_refuses_other_shapes() {
    assert!(ERROR_SCHEMA.is_valid(&json!({"error": {"code": "too_large", "message": "m"}})));
    assert!(!ERROR_SCHEMA.is_valid(&json!({"error": {"code": "huge", "message": "m"}})));
    assert!(!ERROR_SCHEMA.is_valid(&json!({"code": "too_large", "message": "m"})));
}

#[test]
fn the_corpus_is_read_with_the_body_properties() {
    for (name, bytes) in corpus(TARGET) {
        if let Err(e) = check(&json_headers_for("application/json"), &bytes) {
            panic!("{name}: {e}");
        }
    }
}

proptest! {
    #[test]
    fn any_headers_and_body_are_read_or_refused_in_the_error_shape(
        content_type in content_type(),
        content_length in content_length(),
        body in body(),
    ) {
        check(&headers(content_type.as_deref(), content_length.as_deref()), &body)?;
    }

    #[test]
    fn every_pair_of_strings_is_read_back(
        username in odd_string(),
        password in odd_string(),
        extra in object_of(&["id", "email"], |_| json!(1)),
    ) {
        let mut body = extra;
        body.insert("username".into(), json!(username));
        body.insert("password".into(), json!(password));
        let bytes = serde_json::to_vec(&body).unwrap();
        let read = read(&json_headers_for("application/json; charset=utf-8"), &bytes);
        prop_assert_eq!(read, Ok((username, password)));
    }
}
