//! Fuzz target `parse_frame`: every text frame a client can send, random
//! or built to be almost right, is read without a panic into a request or
//! a `bad_request` whose reply echoes the frame's id when it is a valid one.
//! Seeds: `tests/fuzz/corpus/parse_frame/` (see `adapters::fuzzing`).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::requests::request_types;
use super::{BadFrame, Inbound, MAX_REQUEST_ID_CHARS, error, parse_any, parse_frame, parse_send};
use crate::adapters::fuzzing::{
    corpus, field_value, mutated_corpus, mutation, object_of, odd_string, with_raw_tokens,
};
use crate::domain::file::MAX_ATTACHMENTS;

const TARGET: &str = "parse_frame";

/// Every field of every request's `content`.
const FIELDS: &[&str] = &[
    "to",
    "conversationId",
    "messageId",
    "userId",
    "userIds",
    "body",
    "clientMsgId",
    "seq",
    "beforeSeq",
    "afterSeq",
    "limit",
    "active",
    "status",
    "name",
    "visibility",
    "prefix",
    "attachments",
];

/// The envelope's keys.
const ENVELOPE: &[&str] = &["id", "type", "content"];

/// A value the contract accepts for field `name`.
fn good_field(name: &str) -> Value {
    match name {
        "userIds" => json!(["u1", "u2"]),
        "attachments" => json!(["f1", "f2"]),
        "body" => json!("hello"),
        "seq" | "beforeSeq" | "afterSeq" | "limit" => json!(3),
        "active" => json!(true),
        "status" => json!("away"),
        "name" => json!("general"),
        "visibility" => json!("private"),
        "prefix" => json!("ge"),
        _ => json!("c1"),
    }
}

/// A value the contract accepts for envelope key `name`.
fn good_envelope(name: &str) -> Value {
    match name {
        "id" => json!("r1"),
        "type" => json!("ping"),
        _ => json!({}),
    }
}

/// A frame built as a client would, with some parts wrong: an envelope
/// with a known or odd type, a valid or invalid id, content made of the
/// contract's fields holding good or hostile values, then edited as text.
fn structured_frame() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        3 => Just(None),
        3 => odd_string().prop_map(|s| Some(Value::String(s))),
        1 => field_value().prop_map(Some),
    ];
    let kind = prop_oneof![
        6 => prop::sample::select(request_types().collect::<Vec<_>>()).prop_map(Value::from),
        1 => odd_string().prop_map(Value::String),
        1 => field_value(),
    ];
    let content = prop_oneof![
        6 => object_of(FIELDS, good_field).prop_map(|c| Some(Value::Object(c))),
        1 => Just(None),
        1 => field_value().prop_map(Some),
    ];
    let extra = object_of(ENVELOPE, good_envelope);
    (id, kind, content, extra, mutation(ENVELOPE)).prop_map(|(id, kind, content, extra, edit)| {
        let mut frame = Map::new();
        frame.extend(extra);
        if let Some(id) = id {
            frame.insert("id".into(), id);
        }
        frame.insert("type".into(), kind);
        if let Some(content) = content {
            frame.insert("content".into(), content);
        }
        edit.apply(&with_raw_tokens(&Value::Object(frame)))
    })
}

/// The id a reply must echo: the frame's `id` when it is a string within
/// the bound, and the frame a JSON object, or JSON in shape but for what
/// serde_json will not read as a whole (a lone surrogate escape, nesting
/// past its limit), of which the id alone is read; else none.
fn expected_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<Value>,
    }
    let id = match serde_json::from_str::<Value>(text) {
        Ok(frame) => frame.get("id")?.clone(),
        Err(_) => serde_json::from_str::<IdOnly>(text).ok()?.id?,
    };
    match id {
        Value::String(s) if s.chars().count() <= MAX_REQUEST_ID_CHARS => Some(s),
        _ => None,
    }
}

/// The properties every frame must have, whatever it holds.
fn check(text: &str) -> Result<(), TestCaseError> {
    let result = parse_frame(text);
    // The fast path for sends must agree with the general one.
    if let Some(fast) = parse_send(text) {
        prop_assert_eq!(Ok(fast), parse_any(text), "fast path disagrees");
    }
    let want_id = expected_id(text);
    match &result {
        Ok((id, request)) => {
            prop_assert_eq!(id, &want_id, "id not echoed");
            if let Inbound::Send(draft) = request {
                // A message carrying files may have no caption; a caption
                // is never blank, and the files are few and distinct.
                let body = draft.body.as_str();
                if draft.attachments.is_empty() {
                    prop_assert!(!body.trim().is_empty());
                } else {
                    prop_assert!(body.is_empty() || !body.trim().is_empty());
                }
                prop_assert!(draft.attachments.len() <= MAX_ATTACHMENTS);
                let mut ids: Vec<&str> = draft.attachments.iter().map(|f| f.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), draft.attachments.len(), "repeated attachments");
            }
        }
        Err(BadFrame { id, message }) => {
            prop_assert_eq!(id, &want_id, "id not echoed in the error");
            prop_assert!(!message.is_empty());
            // What a client sent comes back in a message at most in part.
            prop_assert!(message.len() <= 1024, "message of {} bytes", message.len());
            let reply: Value = serde_json::from_str(&error(id.as_deref(), "bad_request", message))
                .expect("the error reply is JSON");
            prop_assert_eq!(&reply["type"], "error");
            prop_assert_eq!(&reply["id"], &json!(id));
            prop_assert_eq!(&reply["content"]["code"], "bad_request");
        }
    }
    Ok(())
}

#[test]
fn the_corpus_is_read_with_the_frame_properties() {
    for (name, bytes) in corpus(TARGET) {
        // A text frame is UTF-8 by the time it is parsed (the WebSocket
        // layer refuses anything else).
        let text = String::from_utf8(bytes).unwrap_or_else(|_| panic!("{name} is not UTF-8"));
        if let Err(e) = check(&text) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn the_corpus_holds_a_valid_frame_of_every_request_type() {
    let texts: Vec<String> = corpus(TARGET)
        .into_iter()
        .map(|(_, bytes)| String::from_utf8(bytes).unwrap())
        .collect();
    for kind in request_types() {
        assert!(
            texts.iter().any(|t| {
                parse_frame(t).is_ok()
                    && serde_json::from_str::<Value>(t).is_ok_and(|v| v["type"] == kind)
            }),
            "no valid {kind} in the corpus"
        );
    }
}

proptest! {
    #[test]
    fn any_text_is_a_request_or_a_bad_request(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn frames_built_almost_right_keep_the_properties(text in structured_frame()) {
        check(&text)?;
    }

    #[test]
    fn corpus_frames_edited_keep_the_properties(text in mutated_corpus(TARGET, ENVELOPE)) {
        check(&text)?;
    }
}
