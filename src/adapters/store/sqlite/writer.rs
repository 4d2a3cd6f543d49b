//! The SQLite writer: the one connection that writes, on its own thread
//! (`group_commit`), and what it keeps in memory of the conversations it
//! writes to, so that an append runs its checks without a query and its
//! statements from diesel's cache, under integer keys.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;

use super::wal::{Checkpointer, SCRUB_RETRY, scrub};
use crate::adapters::metrics::StoreMetrics;
use crate::adapters::store::common::{CACHE_LIMIT, attachments_column, seq};
use crate::adapters::store::engine::Tx;
use crate::adapters::store::group_commit::{Batch, WriterState};
use crate::adapters::store::queries::{ConversationQueries, MessageQueries};
use crate::adapters::store::schema::{
    blocks, conversation_keys, conversations, members, user_keys,
};
use crate::adapters::store::statements::{BumpSeq, InsertMessage};
use crate::domain::conversation::direct_key;
use crate::domain::error::PortError;
use crate::domain::membership;
use crate::domain::message::{AppendOutcome, NewMessage};
use crate::domain::ports::AppendError;
use crate::domain::{ClientMsgId, Message, MessageId, UserId};

/// The writer thread's connection, and what it keeps in memory of the
/// conversations being written to: their last seq and their members, which
/// every append needs and which change only through this very thread.
pub struct Writer {
    pub(super) conn: SqliteConnection,
    pub(super) conversations: HashMap<String, Live>,
    /// Each conversation's last seq and activity time that appends of this
    /// batch moved and the table does not show yet: written once per
    /// conversation by `settle`, not once per message.
    pub(super) unsaved: HashMap<String, (i64, i64)>,
    /// SQLite's count of commits by other connections, when last looked.
    data_version: i64,
    /// Dropped with the writer, which stops the checkpointer thread.
    pub(super) checkpointer: Checkpointer,
    /// Where commits and WAL restarts are counted.
    metrics: StoreMetrics,
    /// When the WAL must next be emptied (see [`scrub`]).
    scrub: Scrub,
}

/// When the text an edit or a delete replaced must be gone from the files.
struct Scrub {
    /// Longest time it may stay.
    within: std::time::Duration,
    /// The deadline of the oldest change not yet scrubbed.
    due: Option<std::time::Instant>,
}

/// A conversation as the writer knows it.
pub struct Live {
    last_seq: i64,
    /// The conversation's key in `message_rows`.
    key: i64,
    /// Sorted, for a binary search on every append.
    members: Vec<UserId>,
    /// Each member's key in `message_rows`, in the order of `members`.
    member_keys: Vec<i64>,
    /// A direct conversation (rather than a room).
    direct: bool,
    /// In a direct conversation, the members the other one blocks; sorted.
    /// A block or unblock makes the writer forget the conversation, so
    /// this is never stale and the check costs no query per append.
    blocked: Vec<UserId>,
}

impl Writer {
    /// The writer on `conn`, working with `checkpointer`.
    pub(super) fn new(
        conn: SqliteConnection,
        checkpointer: Checkpointer,
        metrics: StoreMetrics,
        scrub_within: std::time::Duration,
    ) -> Self {
        Self {
            conn,
            conversations: HashMap::new(),
            unsaved: HashMap::new(),
            data_version: 0,
            checkpointer,
            metrics,
            scrub: Scrub {
                within: scrub_within,
                due: None,
            },
        }
    }

    /// The conversation's live state, loaded on first use; `None` if it
    /// does not exist.
    fn live(&mut self, conversation: &str) -> QueryResult<Option<&mut Live>> {
        if !self.conversations.contains_key(conversation) {
            let Some((stored_seq, key, kind)) = conversations::table
                .inner_join(
                    conversation_keys::table.on(conversation_keys::id.eq(conversations::id)),
                )
                .filter(conversations::id.eq(conversation))
                .select((
                    conversations::last_seq,
                    conversation_keys::key,
                    conversations::kind,
                ))
                .first::<(i64, i64, String)>(&mut self.conn)
                .optional()?
            else {
                return Ok(None);
            };
            let mut members = members::table
                .inner_join(user_keys::table.on(user_keys::id.eq(members::user_id)))
                .filter(members::conversation_id.eq(conversation))
                .select((members::user_id, user_keys::key))
                .load::<(String, i64)>(&mut self.conn)?;
            members.sort_unstable();
            let (members, member_keys): (Vec<UserId>, _) = members
                .into_iter()
                .map(|(id, key)| (UserId::new(id), key))
                .unzip();
            let direct = kind == "direct";
            let mut blocked = Vec::new();
            if direct {
                let ids: Vec<String> = members.iter().map(|m| m.as_str().to_owned()).collect();
                blocked = blocks::table
                    .filter(blocks::blocker.eq_any(&ids))
                    .filter(blocks::blocked.eq_any(&ids))
                    .select(blocks::blocked)
                    .load::<String>(&mut self.conn)?
                    .into_iter()
                    .map(UserId::new)
                    .collect();
                blocked.sort_unstable();
            }
            if self.conversations.len() >= CACHE_LIMIT {
                self.conversations.clear();
            }
            // Forgotten in the middle of a batch, it may be ahead of the table.
            let last_seq = self
                .unsaved
                .get(conversation)
                .map_or(stored_seq, |&(seq, _)| seq);
            let live = Live {
                last_seq,
                key,
                members,
                member_keys,
                direct,
                blocked,
            };
            self.conversations.insert(conversation.to_owned(), live);
        }
        Ok(self.conversations.get_mut(conversation))
    }

    /// Its members changed: load them again when next needed.
    fn forget(&mut self, conversation: &str) {
        self.conversations.remove(conversation);
    }
}

impl WriterState for Writer {
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    fn began(&mut self) -> QueryResult<()> {
        // One process is the only writer in normal operation; should
        // another process have written to the same file (two servers
        // started on one database by mistake), what is remembered is stale.
        #[derive(QueryableByName)]
        struct Version {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            data_version: i64,
        }
        let now = diesel::sql_query("PRAGMA data_version")
            .get_result::<Version>(&mut self.conn)?
            .data_version;
        if now != self.data_version {
            self.conversations.clear();
            self.data_version = now;
        }
        Ok(())
    }

    fn settle(&mut self) -> QueryResult<()> {
        for (conversation, (seq, at)) in self.unsaved.drain() {
            BumpSeq {
                conversation: &conversation,
                seq,
                at,
            }
            .execute(&mut self.conn)?;
        }
        Ok(())
    }

    fn rolled_back(&mut self) {
        self.conversations.clear();
        // A write's savepoint is undone after a `settle` (nothing is left
        // then); a batch, with whatever its appends left.
        self.unsaved.clear();
    }

    fn between_batches(&mut self, batch: Batch) {
        if let Some(took) = batch.commit {
            self.metrics.commit_seconds.observe(took.as_secs_f64());
            self.metrics.batch_writes.observe(batch.writes as f64);
        }
        if self.checkpointer.after_batch(&mut self.conn, batch.writes) {
            self.metrics.wal_restarts.inc();
        }
    }

    fn upkeep_due(&self) -> Option<std::time::Instant> {
        self.scrub.due
    }

    fn upkeep(&mut self) {
        let start = std::time::Instant::now();
        match scrub(&mut self.conn) {
            Ok(true) => {
                self.scrub.due = None;
                tracing::debug!(took = ?start.elapsed(), "WAL emptied: replaced text scrubbed");
            }
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "emptying the WAL failed; trying again");
                }
                // Readers or a checkpoint pass held on past the busy timeout.
                self.scrub.due = Some(std::time::Instant::now() + SCRUB_RETRY);
            }
        }
    }
}
impl Tx for Writer {
    type Conn = SqliteConnection;

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// The writer is the only one: nothing can append between this read
    /// and the end of the write.
    fn lock_conversation(&mut self, conversation: &str) -> QueryResult<Option<i64>> {
        conversations::table
            .find(conversation)
            .select(conversations::last_seq)
            .first::<i64>(&mut self.conn)
            .optional()
    }

    /// Loads the members again when next needed.
    fn members_changed(&mut self, conversation: &str) {
        self.forget(conversation);
    }

    /// Makes the writer load the pair's direct conversation again, with
    /// the block as it now stands.
    fn block_changed(&mut self, blocker: &str, blocked: &str) -> QueryResult<()> {
        let key = direct_key(&UserId::new(blocker), &UserId::new(blocked));
        if let Some(id) = self.conn.direct_by_key(&key)? {
            self.forget(&id);
        }
        Ok(())
    }

    /// The files must lose the text by the deadline.
    fn text_replaced(&mut self) {
        let within = self.scrub.within;
        self.scrub
            .due
            .get_or_insert_with(|| std::time::Instant::now() + within);
    }
}

/// Whether a failed append wrote nothing: refusals are found before the
/// first statement that writes.
pub(super) fn refused(e: &AppendError) -> bool {
    !matches!(e, AppendError::Unknown(_))
}

/// Appends one message on the writer: the next seq, after the checks.
/// Runs without a savepoint (see [`refused`]), so every check comes
/// before the first write.
pub(super) fn append(w: &mut Writer, new: NewMessage) -> Result<AppendOutcome, AppendError> {
    let conv = new.conversation_id.as_str();
    let sender = new.sender.id.as_str();
    let live = w.live(conv)?.ok_or(AppendError::NoSuchConversation)?;
    // The writer's cache supplies the facts; the core's rule decides.
    let member = live.members.binary_search(&new.sender.id);
    let blocked = live.blocked.binary_search(&new.sender.id).is_ok();
    membership::authorize_send(live.direct, member.is_ok(), blocked)?;
    // Unreachable while the rule holds; a row needs the sender's key.
    let member = member.map_err(|_| AppendError::NotMember)?;
    let (conversation, sender_key) = (live.key, live.member_keys[member]);
    let seq = live.last_seq + 1;
    let conn = &mut w.conn;
    let at = new.created_at.millis();
    let id = uuid::Uuid::now_v7().to_string();
    let cmid = new.client_msg_id.as_ref().map(ClientMsgId::as_str);
    let files = attachments_column(&new.attachments);
    // Insert first: a retried clientMsgId is rare, and the unique index
    // finds it while inserting, so the common case needs no lookup.
    let inserted = InsertMessage {
        id: &id,
        conversation,
        seq,
        sender: sender_key,
        body: new.body.as_str(),
        client_msg_id: cmid,
        at,
        attachments: files.as_deref(),
    }
    .execute(conn);
    match (inserted, cmid) {
        (Ok(_), _) => {}
        (Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)), Some(cmid)) => {
            let original = conn
                .original(conv, sender, cmid)
                .map_err(|e| AppendError::Unknown(PortError(e)))?
                .ok_or(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    info,
                ))?;
            return Ok(AppendOutcome::Duplicate(original));
        }
        (Err(e), _) => return Err(e.into()),
    }
    if !new.attachments.is_empty() {
        conn.record_attachments(&id, conv, &new.attachments)?;
    }
    // The conversation's row once per batch, in `settle`.
    match w.unsaved.get_mut(conv) {
        Some(unsaved) => *unsaved = (seq, at),
        None => {
            w.unsaved.insert(conv.to_owned(), (seq, at));
        }
    }
    // Only now, with every statement done: a failed append leaves the
    // remembered seq as it was.
    let live = w.live(conv)?.ok_or(AppendError::NoSuchConversation)?;
    live.last_seq = seq;
    let members = live.members.clone();
    Ok(AppendOutcome::Stored {
        message: Message {
            id: MessageId::new(id),
            conversation_id: new.conversation_id.clone(),
            seq: self::seq(seq),
            sender_id: new.sender.id.clone(),
            sender: new.sender.username.clone(),
            body: new.body.into_string(),
            client_msg_id: new.client_msg_id.clone(),
            created_at: new.created_at,
            edited_at: None,
            deleted: false,
            attachments: new.attachments,
        },
        members,
    })
}
