//! Unit tests of reading requests and writing frames.

use serde_json::Value;

use super::*;
use crate::domain::service::{Draft, Recipient};
use crate::domain::{
    ClientMsgId, ConversationId, Event, Message, MessageBody, RoomName, Timestamp, UserId,
    Visibility,
};

fn parse(text: &str) -> Result<(Option<String>, Inbound), BadFrame> {
    parse_frame(text)
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(
        rfc3339(Timestamp::from_millis(1_795_810_053_123)),
        "2026-11-27T20:07:33.123Z"
    );
    assert_eq!(
        rfc3339(Timestamp::from_millis(0)),
        "1970-01-01T00:00:00.000Z"
    );
}

#[test]
fn a_well_formed_send_is_read_with_its_id() {
    let (id, req) = parse(
        r#"{"type":"sendPrivateMessage","id":"r1","content":{"to":"u2","body":"hi","clientMsgId":"c1"}}"#,
    )
    .unwrap();
    assert_eq!(id.as_deref(), Some("r1"));
    assert_eq!(
        req,
        Inbound::Send(Draft {
            to: Recipient::User(UserId::new("u2")),
            body: MessageBody::parse("hi").unwrap(),
            client_msg_id: Some(ClientMsgId::parse("c1").unwrap()),
            attachments: Vec::new(),
        })
    );
}

/// Sends are read by a fast path first; whatever it takes, the general
/// path reads the same, and whatever it cannot take (every error case
/// here) is left to the general path and its error.
#[test]
fn the_fast_path_for_sends_agrees_with_the_general_one() {
    let long_id = "x".repeat(65);
    let long_to = "u".repeat(129);
    let long_body = "b".repeat(4001);
    let taken = [
        r#"{"type":"sendMessage","id":"r1","content":{"conversationId":"c1","body":"hi","clientMsgId":"k1"}}"#.to_owned(),
        r#"{"content":{"body":"h\u00e9 \"q\"","to":"u2"},"type":"sendPrivateMessage"}"#.to_owned(),
        r#"{"type":"sendMessage","id":null,"content":{"conversationId":"c1","body":"x","clientMsgId":null,"to":"u9"}}"#.to_owned(),
        r#"{"type":"sendPrivateMessage","id":"\u0072\u0031","content":{"to":"u\u0032","body":"hi"}}"#.to_owned(),
    ];
    let left = [
        r#"{"type":"sendMessage","content":{"body":"hi"}}"#.to_owned(),
        r#"{"type":"sendPrivateMessage","content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"","body":"hi"}}"#.to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":7,"body":"hi"}}"#.to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"c1","body":""}}"#.to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"c1","body":5}}"#.to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi","clientMsgId":""}}"#
            .to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi","clientMsgId":3}}"#
            .to_owned(),
        r#"{"type":"sendMessage","id":5,"content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
        r#"{"type":"sendMessage","id":"a","id":"b","content":{"conversationId":"c1","body":"hi"}}"#
            .to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"a","body":"b"}}"#
            .to_owned(),
        r#"{"type":"sendMessage","content":null}"#.to_owned(),
        r#"{"type":"sendMessage"}"#.to_owned(),
        r#"{"type":"ping","content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi"}} x"#.to_owned(),
        r#"{"type":"sendMessage","extra":1e400,"content":{"conversationId":"c1","body":"hi"}}"#
            .to_owned(),
        r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi","more":"\udc00"}}"#
            .to_owned(),
        format!(
            r#"{{"type":"sendMessage","id":"{long_id}","content":{{"conversationId":"c1","body":"hi"}}}}"#
        ),
        format!(r#"{{"type":"sendPrivateMessage","content":{{"to":"{long_to}","body":"hi"}}}}"#),
        format!(
            r#"{{"type":"sendMessage","content":{{"conversationId":"c1","body":"{long_body}"}}}}"#
        ),
    ];
    for text in &taken {
        let fast = parse_send(text).unwrap_or_else(|| panic!("not taken: {text}"));
        assert_eq!(Ok(fast), parse_any(text), "{text}");
    }
    for text in &left {
        assert_eq!(parse_send(text), None, "{text}");
        assert_eq!(parse(text), parse_any(text), "{text}");
    }
    // The duplicate key goes the general way, which keeps the last one.
    let (id, _) = parse(&left[9]).unwrap();
    assert_eq!(id.as_deref(), Some("b"));
}

#[test]
fn content_and_id_may_be_left_out() {
    assert_eq!(
        parse(r#"{"type":"ping"}"#).unwrap(),
        (None, Inbound::Other(Request::Ping))
    );
    assert_eq!(
        parse(r#"{"type":"ping","id":null,"content":null}"#).unwrap(),
        (None, Inbound::Other(Request::Ping))
    );
}

#[test]
fn frames_that_are_not_json_objects_are_bad_requests_without_id() {
    for text in ["not json", "[1,2]", "42", "\"s\"", "null", ""] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.id, None, "{text}");
    }
}

#[test]
fn a_frame_with_a_lone_surrogate_escape_is_refused_with_its_id() {
    for text in [
        r#"{"id":"r1","type":"sendPrivateMessage","content":{"to":"u","body":"\ud800"}}"#,
        r#"{"type":"ping","content":{"x":["\udfff"]},"id":"r1"}"#,
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("r1"), "{text}");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
    // No id to give back when the id itself holds the escape.
    assert_eq!(
        parse(r#"{"id":"\ud800","type":"ping"}"#).unwrap_err().id,
        None
    );
}

#[test]
fn an_unknown_type_is_answered_with_the_request_id() {
    let e = parse(r#"{"type":"fly","id":"r9"}"#).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("r9"));
    assert!(e.message.contains("unknown type"), "{}", e.message);
}

#[test]
fn a_missing_type_or_non_object_content_is_a_bad_request() {
    assert!(parse(r#"{"id":"a"}"#).unwrap_err().message.contains("type"));
    assert!(parse(r#"{"type":7}"#).unwrap_err().message.contains("type"));
    let e = parse(r#"{"type":"ping","id":"a","content":[1]}"#).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("a"));
    assert!(e.message.contains("content"));
}

#[test]
fn an_id_longer_than_64_characters_or_not_a_string_is_refused() {
    let long = "x".repeat(65);
    let e = parse(&format!(r#"{{"type":"ping","id":"{long}"}}"#)).unwrap_err();
    assert_eq!(e.id, None);
    assert!(parse(r#"{"type":"ping","id":5}"#).is_err());
    let ok = "x".repeat(64);
    assert!(parse(&format!(r#"{{"type":"ping","id":"{ok}"}}"#)).is_ok());
}

#[test]
fn missing_or_mistyped_fields_name_the_field() {
    let cases = [
        (
            r#"{"type":"sendPrivateMessage","content":{"body":"hi"}}"#,
            "to",
        ),
        (
            r#"{"type":"sendPrivateMessage","content":{"to":5,"body":"hi"}}"#,
            "to",
        ),
        (
            r#"{"type":"sendPrivateMessage","content":{"to":"u"}}"#,
            "body",
        ),
        (
            r#"{"type":"sendMessage","content":{"conversationId":"c","body":7}}"#,
            "body",
        ),
        (
            r#"{"type":"sendMessage","content":{"body":"x"}}"#,
            "conversationId",
        ),
        (
            r#"{"type":"sendMessage","content":{"conversationId":"c","body":"x","clientMsgId":1}}"#,
            "clientMsgId",
        ),
        (
            r#"{"type":"getHistory","content":{"conversationId":"c","limit":-1}}"#,
            "limit",
        ),
        (
            r#"{"type":"getHistory","content":{"conversationId":"c","beforeSeq":1.5}}"#,
            "beforeSeq",
        ),
        (
            r#"{"type":"getHistory","content":{"conversationId":"c","afterSeq":"3"}}"#,
            "afterSeq",
        ),
        (
            r#"{"type":"markRead","content":{"conversationId":"c"}}"#,
            "seq",
        ),
        (
            r#"{"type":"typing","content":{"conversationId":"c","active":"yes"}}"#,
            "active",
        ),
        (
            r#"{"type":"getPresence","content":{"userIds":"u1"}}"#,
            "userIds",
        ),
        (
            r#"{"type":"getPresence","content":{"userIds":[1]}}"#,
            "userIds",
        ),
        (
            r#"{"type":"setStatus","content":{"status":"offline"}}"#,
            "status",
        ),
        (
            r#"{"type":"getConnectedUsers","content":{"limit":"a"}}"#,
            "limit",
        ),
    ];
    for (text, field) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(field), "{text}: {}", e.message);
    }
}

#[test]
fn body_rules_are_applied_at_the_edge() {
    let long = "x".repeat(4001);
    let e = parse(&format!(
        r#"{{"type":"sendPrivateMessage","content":{{"to":"u","body":"{long}"}}}}"#
    ))
    .unwrap_err();
    assert!(e.message.contains("4000"));
    let e =
        parse(r#"{"type":"sendPrivateMessage","content":{"to":"u","body":"  \n "}}"#).unwrap_err();
    assert!(e.message.contains("white space"));
}

#[test]
fn a_history_limit_of_zero_is_refused_and_a_large_one_clamped() {
    assert!(parse(r#"{"type":"getHistory","content":{"conversationId":"c","limit":0}}"#).is_err());
    let (_, req) =
        parse(r#"{"type":"getHistory","content":{"conversationId":"c","limit":1000}}"#).unwrap();
    let Inbound::Other(Request::GetHistory { query, .. }) = req else {
        panic!()
    };
    assert_eq!(query.limit, 200);
}

#[test]
fn block_requests_are_read_and_need_a_user_id() {
    let (id, req) = parse(r#"{"type":"blockUser","id":"b1","content":{"userId":"u"}}"#).unwrap();
    assert_eq!(id.as_deref(), Some("b1"));
    assert_eq!(
        req,
        Inbound::Other(Request::BlockUser {
            user_id: UserId::new("u")
        })
    );
    let (_, req) = parse(r#"{"type":"unblockUser","content":{"userId":"u"}}"#).unwrap();
    assert_eq!(
        req,
        Inbound::Other(Request::UnblockUser {
            user_id: UserId::new("u")
        })
    );
    let (_, req) = parse(r#"{"type":"getBlocked"}"#).unwrap();
    assert_eq!(req, Inbound::Other(Request::GetBlocked));
    for text in [
        r#"{"type":"blockUser","content":{}}"#,
        r#"{"type":"blockUser","content":{"userId":""}}"#,
        r#"{"type":"unblockUser","content":{"userId":7}}"#,
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains("userId"), "{text}: {}", e.message);
    }
}

#[test]
fn room_requests_are_read_and_checked() {
    let (_, req) =
        parse(r#"{"type":"createRoom","content":{"name":"  Lobby ","visibility":"public"}}"#)
            .unwrap();
    assert_eq!(
        req,
        Inbound::Other(Request::CreateRoom {
            name: RoomName::parse("Lobby").unwrap(),
            visibility: Visibility::Public
        })
    );
    let (_, req) =
        parse(r#"{"type":"createRoom","content":{"name":"x","visibility":"private"}}"#).unwrap();
    assert!(matches!(
        req,
        Inbound::Other(Request::CreateRoom {
            visibility: Visibility::Private,
            ..
        })
    ));
    let cases = [
        (r#"{"type":"createRoom","content":{}}"#, "name"),
        (r#"{"type":"createRoom","content":{"name":"   "}}"#, "name"),
        (
            r#"{"type":"createRoom","content":{"name":"x","visibility":"secret"}}"#,
            "visibility",
        ),
        (
            r#"{"type":"createRoom","content":{"name":"x"}}"#,
            "visibility",
        ),
        (
            r#"{"type":"createRoom","content":{"name":"x","visibility":null}}"#,
            "visibility",
        ),
        (r#"{"type":"joinRoom","content":{}}"#, "conversationId"),
        (
            r#"{"type":"inviteToRoom","content":{"conversationId":"c"}}"#,
            "userId",
        ),
        (
            r#"{"type":"leaveRoom","content":{"conversationId":3}}"#,
            "conversationId",
        ),
        (r#"{"type":"listRooms","content":{"prefix":5}}"#, "prefix"),
        (r#"{"type":"listRooms","content":{"limit":-2}}"#, "limit"),
        (
            r#"{"type":"editMessage","content":{"conversationId":"c","body":"x"}}"#,
            "messageId",
        ),
        (
            r#"{"type":"editMessage","content":{"conversationId":"c","messageId":"m"}}"#,
            "body",
        ),
        (
            r#"{"type":"deleteMessage","content":{"messageId":"m"}}"#,
            "conversationId",
        ),
    ];
    for (text, field) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(field), "{text}: {}", e.message);
    }
}

#[test]
fn more_than_1000_presence_ids_are_refused() {
    let ids: Vec<String> = (0..1001).map(|i| format!("\"u{i}\"")).collect();
    let text = format!(
        r#"{{"type":"getPresence","content":{{"userIds":[{}]}}}}"#,
        ids.join(",")
    );
    assert!(parse(&text).is_err());
}

#[test]
fn an_ack_echoes_the_id_or_null_and_events_carry_none() {
    let a = ack(Some("r1"), serde_json::json!({}));
    assert_eq!(a.as_str(), r#"{"type":"ack","id":"r1","content":{}}"#);
    let e = error(None, "bad_request", "x");
    assert_eq!(
        e.as_str(),
        r#"{"type":"error","id":null,"content":{"code":"bad_request","message":"x"}}"#
    );
    let ev = event_frame("typing", serde_json::json!({"a":1}));
    assert_eq!(ev.as_str(), r#"{"type":"typing","content":{"a":1}}"#);
}

#[test]
fn a_deleted_message_has_an_empty_body_on_the_wire() {
    let m = Message {
        id: crate::domain::MessageId::new("m"),
        conversation_id: ConversationId::new("c"),
        seq: 3,
        sender_id: UserId::new("u"),
        sender: crate::domain::Username::parse("ann").unwrap(),
        body: "secret".into(),
        client_msg_id: None,
        created_at: Timestamp::from_millis(0),
        edited_at: None,
        deleted: true,
        attachments: Vec::new(),
    };
    let v: Value = serde_json::from_str(encode_event(&Event::MessageUpdated(m)).as_str()).unwrap();
    assert_eq!(v["type"], "messageUpdated");
    assert_eq!(v["content"]["message"]["body"], "");
    assert_eq!(v["content"]["message"]["deleted"], true);
    assert_eq!(v["content"]["message"]["seq"], 3);
    assert_eq!(v["content"]["message"]["clientMsgId"], Value::Null);
    assert_eq!(v["content"]["message"]["editedAt"], Value::Null);
}

#[test]
fn the_request_table_names_each_type_once() {
    let mut types: Vec<&str> = super::requests::request_types().collect();
    let listed = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), listed);
}

// ------------------------------------------------------------ attachments

fn send_to_c1(content: &str) -> String {
    format!(r#"{{"type":"sendMessage","id":"r1","content":{{"conversationId":"c1",{content}}}}}"#)
}

/// The file ids of a send that parses.
fn attached(text: &str) -> Vec<String> {
    match parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}")).1 {
        Inbound::Send(d) => d
            .attachments
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
        other => panic!("{text}: not a send: {other:?}"),
    }
}

/// The message of a send refused for a bad `attachments`.
fn refused(text: &str) -> String {
    let e = parse(text).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("r1"), "{text}");
    e.message
}

fn quoted(ids: impl Iterator<Item = String>) -> String {
    ids.map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_send_with_attachments_is_read_with_its_file_ids_in_order_and_may_have_no_body() {
    let (id, req) = parse(&send_to_c1(r#""body":"","attachments":["f2","f1"]"#)).unwrap();
    assert_eq!(id.as_deref(), Some("r1"));
    assert_eq!(
        req,
        Inbound::Send(Draft {
            to: Recipient::Conversation(ConversationId::new("c1")),
            body: MessageBody::caption("").unwrap(),
            client_msg_id: None,
            attachments: vec![
                crate::domain::FileId::new("f2"),
                crate::domain::FileId::new("f1")
            ],
        })
    );
    // No body at all, to a user, with a caption, with a clientMsgId.
    let (_, req) = parse(
        r#"{"type":"sendPrivateMessage","content":{"to":"u2","attachments":["f1"],"clientMsgId":"k"}}"#,
    )
    .unwrap();
    assert_eq!(
        req,
        Inbound::Send(Draft {
            to: Recipient::User(UserId::new("u2")),
            body: MessageBody::caption("").unwrap(),
            client_msg_id: Some(ClientMsgId::parse("k").unwrap()),
            attachments: vec![crate::domain::FileId::new("f1")],
        })
    );
    let (_, req) = parse(&send_to_c1(r#""body":"a caption","attachments":["f1"]"#)).unwrap();
    let Inbound::Send(draft) = req else {
        panic!("{req:?}")
    };
    assert_eq!(draft.body.as_str(), "a caption");
}

#[test]
fn up_to_ten_distinct_attachments_are_taken_and_eleven_refused() {
    let ten: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let text = send_to_c1(&format!(
        r#""body":"x","attachments":[{}]"#,
        quoted(ten.iter().cloned())
    ));
    assert_eq!(attached(&text), ten);
    let eleven = send_to_c1(&format!(
        r#""body":"x","attachments":[{}]"#,
        quoted((0..11).map(|i| format!("f{i}")))
    ));
    assert!(refused(&eleven).contains("attachments"));
}

#[test]
fn attachments_that_repeat_an_id_or_are_not_ids_are_refused() {
    let long = "f".repeat(129);
    for bad in [
        r#"["f1","f2","f1"]"#.to_owned(),
        r#"["f1",5]"#.to_owned(),
        r#"[null]"#.to_owned(),
        r#"[["f1"]]"#.to_owned(),
        r#"[{"id":"f1"}]"#.to_owned(),
        r#"[""]"#.to_owned(),
        format!(r#"["{long}"]"#),
        r#""f1""#.to_owned(),
        r#"{"0":"f1"}"#.to_owned(),
        r#"7"#.to_owned(),
        r#"true"#.to_owned(),
    ] {
        let text = send_to_c1(&format!(r#""body":"x","attachments":{bad}"#));
        let message = refused(&text);
        assert!(message.contains("attachments"), "{bad}: {message}");
    }
}

#[test]
fn null_absent_or_empty_attachments_are_none_and_the_body_rules_stand() {
    assert!(attached(&send_to_c1(r#""body":"x","attachments":null"#)).is_empty());
    assert!(attached(&send_to_c1(r#""body":"x","attachments":[]"#)).is_empty());
    assert!(attached(&send_to_c1(r#""body":"x""#)).is_empty());
    // Without a file, an empty or missing body is still refused.
    for content in [
        r#""body":"","attachments":null"#,
        r#""body":"","attachments":[]"#,
        r#""attachments":[]"#,
        r#""body":"""#,
    ] {
        let e = parse(&send_to_c1(content)).unwrap_err();
        assert!(e.message.contains("body"), "{content}: {}", e.message);
    }
    // With files, a blank caption or a non-string body is still refused.
    for content in [
        r#""body":"   ","attachments":["f1"]"#,
        r#""body":5,"attachments":["f1"]"#,
    ] {
        assert!(parse(&send_to_c1(content)).is_err(), "{content}");
    }
}

#[test]
fn the_fast_path_takes_no_attachments_and_leaves_sends_with_them_to_the_general_one() {
    let plain = r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi"}}"#;
    match parse_send(plain) {
        Some((_, Inbound::Send(draft))) => assert!(draft.attachments.is_empty()),
        other => panic!("not taken: {other:?}"),
    }
    for text in [
        send_to_c1(r#""body":"hi","attachments":["f1"]"#),
        send_to_c1(r#""attachments":["f1"]"#),
        send_to_c1(r#""body":"hi","attachments":null"#),
    ] {
        assert_eq!(parse_send(&text), None, "{text}");
        assert_eq!(parse(&text), parse_any(&text), "{text}");
    }
    assert_eq!(
        attached(&send_to_c1(r#""body":"hi","attachments":["f1"]"#)),
        vec!["f1"]
    );
}

fn message_with(attachments: Vec<crate::domain::Attachment>) -> Message {
    Message {
        id: crate::domain::MessageId::new("m"),
        conversation_id: ConversationId::new("c"),
        seq: 1,
        sender_id: UserId::new("u"),
        sender: crate::domain::Username::parse("ann").unwrap(),
        body: String::new(),
        client_msg_id: None,
        created_at: Timestamp::from_millis(0),
        edited_at: None,
        deleted: false,
        attachments,
    }
}

/// The `message` object of a `message` event.
fn message_json(m: Message) -> Value {
    let v: Value = serde_json::from_str(encode_event(&Event::Message(m)).as_str()).unwrap();
    v["content"]["message"].clone()
}

#[test]
fn a_message_carries_its_attachments_as_file_objects_in_order() {
    use crate::domain::{Attachment, FileId};
    let image = Attachment {
        id: FileId::new("f1"),
        name: "cat.png".into(),
        size: 2048,
        content_type: "image/png".into(),
        sha256: "ab".repeat(32),
        width: Some(640),
        height: Some(480),
        thumbnail: true,
    };
    let text = Attachment {
        id: FileId::new("f2"),
        name: "notes \"1\".txt".into(),
        size: 3,
        content_type: "text/plain".into(),
        sha256: "cd".repeat(32),
        width: None,
        height: None,
        thumbnail: false,
    };
    let v = message_json(message_with(vec![image, text]));
    assert_eq!(
        v["attachments"],
        serde_json::json!([
            {"id": "f1", "name": "cat.png", "size": 2048, "contentType": "image/png",
             "sha256": "ab".repeat(32), "width": 640, "height": 480, "thumbnail": true},
            {"id": "f2", "name": "notes \"1\".txt", "size": 3, "contentType": "text/plain",
             "sha256": "cd".repeat(32), "width": null, "height": null, "thumbnail": false},
        ])
    );
    assert_eq!(v["body"], "");
}

#[test]
fn a_message_without_attachments_has_no_attachments_key() {
    let v = message_json(message_with(Vec::new()));
    let object = v.as_object().unwrap();
    assert!(!object.contains_key("attachments"), "{v}");
    assert!(object.contains_key("body"), "{v}");
}
