//! The PostgreSQL append: a message takes its conversation's next seq under
//! the row's lock, held to the commit, so that appends from any process
//! queue in one order.

use anyhow::anyhow;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::text;
use crate::adapters::store::common::{attachments_column, seq};
use crate::adapters::store::queries::{ConversationQueries, MessageQueries};
use crate::adapters::store::schema::{conversations, messages};
use crate::domain::error::PortError;
use crate::domain::membership;
use crate::domain::message::{AppendOutcome, NewMessage};
use crate::domain::ports::AppendError;
use crate::domain::{ClientMsgId, Message, MessageId};

/// Locks a conversation's row for the rest of the transaction and returns
/// its newest seq; `None` when it does not exist. Every write that touches
/// a conversation takes this lock first (an append, by the update that
/// takes its seq), so they queue in one order. A write holds one such lock,
/// except a batch of appends, which takes its conversations' in order of
/// id (`append_batch`): none can deadlock another.
pub(super) fn lock_conversation(
    conn: &mut PgConnection,
    conversation: &str,
) -> QueryResult<Option<i64>> {
    conversations::table
        .find(conversation)
        .select(conversations::last_seq)
        // NO KEY: foreign-key checks of new members and messages, which
        // take KEY SHARE on this row, need not wait for it.
        .for_no_key_update()
        .get_result::<i64>(conn)
        .optional()
}

/// Why an append's transaction was rolled back.
enum Abort {
    Failed(AppendError),
    /// The sender already stored this clientMsgId here: the original, if
    /// found (boxed: every `?` in the transaction builds this type, so it
    /// stays small).
    Duplicate(Option<Box<Message>>),
}

impl From<DieselError> for Abort {
    fn from(e: DieselError) -> Self {
        Self::Failed(e.into())
    }
}

/// Stores `new` with the conversation's next seq, in one transaction that
/// holds the conversation's row lock from the seq's increment to the commit.
/// Called inside a transaction (a batch), diesel makes this transaction a
/// savepoint: a failure undoes this message alone, and every statement of
/// the message, the duplicate's lookup included, runs inside it.
pub(super) fn append(
    conn: &mut PgConnection,
    new: NewMessage,
) -> Result<AppendOutcome, AppendError> {
    let conv = text(new.conversation_id.as_str());
    let sender = text(new.sender.id.as_str());
    let body = text(new.body.as_str());
    let cmid = new.client_msg_id.as_ref().map(|c| text(c.as_str()));
    let at = new.created_at.millis();
    let id = uuid::Uuid::now_v7().to_string();
    let files = attachments_column(&new.attachments);
    let stored = conn.transaction(|conn| {
        // Taking the next seq locks the row: a concurrent append to this
        // conversation, from any process, waits here until this one ends.
        // The same statement tells whether a member blocks the sender, so
        // that the check costs no round trip (an index probe of the few
        // users who block the sender, usually none).
        let (seq, direct, blocked) = diesel::update(conversations::table.find(&conv))
            .set((
                conversations::last_seq.eq(conversations::last_seq + 1),
                conversations::last_activity.eq(at),
            ))
            .returning((
                conversations::last_seq,
                conversations::kind.eq("direct"),
                diesel::dsl::sql::<diesel::sql_types::Bool>(
                    "EXISTS (SELECT 1 FROM blocks JOIN members \
                     ON members.user_id = blocks.blocker \
                     AND members.conversation_id = conversations.id \
                     WHERE blocks.blocked = ",
                )
                .bind::<diesel::sql_types::Text, _>(&sender)
                .sql(")"),
            ))
            .get_result::<(i64, bool, bool)>(conn)
            .optional()?
            .ok_or(Abort::Failed(AppendError::NoSuchConversation))?;
        let members = conn.member_ids(&conv)?;
        let is_member = members.iter().any(|m| m.as_str() == sender);
        membership::authorize_send(direct, is_member, blocked)
            .map_err(|denied| Abort::Failed(denied.into()))?;
        // A retry of a stored send conflicts on the clientMsgId index; the
        // lock guarantees the original is committed (or stored earlier in
        // this batch), so the conflict is seen here rather than as an error.
        let inserted = diesel::insert_into(messages::table)
            .values((
                messages::id.eq(&id),
                messages::conversation_id.eq(&conv),
                messages::seq.eq(seq),
                messages::sender_id.eq(&sender),
                messages::body.eq(&body),
                messages::client_msg_id.eq(&cmid),
                messages::created_at.eq(at),
                messages::attachments.eq(&files),
            ))
            .on_conflict_do_nothing()
            .execute(conn)?;
        if inserted == 0 {
            let original = match &cmid {
                Some(cmid) => conn
                    .original(&conv, &sender, cmid)
                    .map_err(|e| Abort::Failed(AppendError::Unknown(PortError(e))))?,
                None => None,
            };
            // Rolling back gives the seq back.
            return Err(Abort::Duplicate(original.map(Box::new)));
        }
        if !new.attachments.is_empty() {
            conn.record_attachments(&id, &conv, &new.attachments)?;
        }
        Ok((seq, members))
    });
    match stored {
        Ok((seq, members)) => {
            let message = Message {
                id: MessageId::new(id),
                conversation_id: new.conversation_id,
                seq: self::seq(seq),
                sender_id: new.sender.id,
                sender: new.sender.username,
                body,
                client_msg_id: cmid
                    .map(|c| ClientMsgId::parse(&c))
                    .transpose()
                    .map_err(|e| PortError(e.into()))?,
                created_at: new.created_at,
                edited_at: None,
                deleted: false,
                attachments: new.attachments,
            };
            Ok(AppendOutcome::Stored { message, members })
        }
        Err(Abort::Failed(e)) => Err(e),
        Err(Abort::Duplicate(original)) => original
            .map(|m| AppendOutcome::Duplicate(*m))
            .ok_or_else(|| {
                AppendError::Unknown(PortError(anyhow!(
                    "a message conflicted with no original to return"
                )))
            }),
    }
}

/// Appends a batch in one transaction, so that it costs one commit: the
/// rows of all its conversations are locked first, then each message is
/// appended, in order, in a savepoint of its own.
pub(super) fn append_batch(
    conn: &mut PgConnection,
    batch: Vec<NewMessage>,
) -> Result<Vec<Result<AppendOutcome, AppendError>>, AppendError> {
    conn.transaction(|conn| {
        // The batch holds every lock it takes until it commits, and may
        // span conversations: two batches taking the same two locks in
        // opposite orders would deadlock, and PostgreSQL would abort one of
        // them after a second. Taken in one order, sorted by id, before any
        // message is written, a batch only ever waits for a lock above all
        // those it holds; every other write holds one conversation lock,
        // so none can close a cycle. Locked here, at the top of the
        // transaction, a lock also outlives a message's rolled-back
        // savepoint, so the batch never lets go of a conversation half-way.
        let mut conversations: Vec<String> = batch
            .iter()
            .map(|new| text(new.conversation_id.as_str()))
            .collect();
        conversations.sort_unstable();
        conversations.dedup();
        for conversation in &conversations {
            // An unknown one locks nothing; its messages fail on their own.
            lock_conversation(conn, conversation)?;
        }
        Ok(batch.into_iter().map(|new| append(conn, new)).collect())
    })
}
