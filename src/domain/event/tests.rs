use super::*;
use crate::domain::ids::MessageId;
use crate::domain::presence::Status;
use crate::domain::time::Timestamp;
use crate::domain::user::Username;

fn ann() -> User {
    User {
        id: UserId::new("ann"),
        username: Username::parse("ann").unwrap(),
    }
}

fn message(seq: u64) -> Message {
    Message {
        id: MessageId::new("m"),
        conversation_id: ConversationId::new("c"),
        seq,
        sender_id: UserId::new("ann"),
        sender: ann().username,
        body: "hi".to_owned(),
        client_msg_id: None,
        created_at: Timestamp::from_millis(1),
        edited_at: None,
        deleted: false,
        attachments: Vec::new(),
    }
}

fn member(action: MemberAction) -> Event {
    Event::Member {
        conversation_id: ConversationId::new("c"),
        user: ann(),
        action,
    }
}

#[test]
fn a_message_is_sequenced_by_its_own_seq() {
    let event = Event::Message(message(7));
    let c = ConversationId::new("c");
    let expected = Guarantee::Sequenced {
        conversation: &c,
        seq: 7,
    };
    assert_eq!(event.guarantee(), expected);
}

#[test]
fn an_update_follows_the_message_it_changes() {
    let event = Event::MessageUpdated(message(3));
    let c = ConversationId::new("c");
    let expected = Guarantee::AfterMessage {
        conversation: &c,
        seq: 3,
    };
    assert_eq!(event.guarantee(), expected);
}

#[test]
fn leaving_ends_the_leavers_order_and_other_member_events_are_best_effort() {
    let (c, who) = (ConversationId::new("c"), UserId::new("ann"));
    let left = member(MemberAction::Left);
    let expected = Guarantee::EndsOrder {
        conversation: &c,
        member: &who,
    };
    assert_eq!(left.guarantee(), expected);
    for action in [MemberAction::Joined, MemberAction::Invited] {
        assert_eq!(member(action).guarantee(), Guarantee::BestEffort);
    }
}

#[test]
fn receipts_typing_and_presence_are_best_effort() {
    let c = ConversationId::new("c");
    let events = [
        Event::Receipt {
            conversation_id: c.clone(),
            user_id: UserId::new("ann"),
            seq: 4,
        },
        Event::Typing {
            conversation_id: c,
            user_id: UserId::new("ann"),
            active: true,
        },
        Event::Presence(Presence {
            user: ann(),
            status: Status::Online,
            last_seen: None,
        }),
    ];
    for event in events {
        assert_eq!(event.guarantee(), Guarantee::BestEffort, "{event:?}");
    }
}
