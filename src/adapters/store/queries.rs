//! The queries that both diesel adapters run, written once.
//!
//! This file is compiled twice, as `sqlite::queries` and
//! `postgres::queries`: each adapter declares `#[path = "queries.rs"] mod
//! queries;`, and every function here is checked and built against that
//! adapter's own connection type. diesel checks a query's type per backend,
//! so one function generic over both would need a bound for every query it
//! builds; this keeps the bodies plain. The including adapter supplies what
//! differs between the backends:
//!
//! - `Db`, its connection type;
//! - `JOIN_ORDER`, the SQL that orders a conversation's members by when
//!   they joined;
//! - `BLOCK_ORDER`, the SQL that orders blocks by when they were made;
//! - `IDS_PER_QUERY`, how many ids one query may bind.
//!
//! Arguments arrive as the adapter stores them (PostgreSQL replaces U+0000
//! first). What only one backend does stays in its adapter: SQLite's writer
//! and its prepared append statements, PostgreSQL's row locks and
//! `ON CONFLICT` inserts.

use diesel::prelude::*;

use super::super::common::{
    ConversationRow, MessageRow, SummaryRow, conversation_columns, conversation_from_row,
    message_columns, message_from_row, seq, summary_columns, to_db_seq, user_from_row,
    visibility_column,
};
use super::super::schema::{blocks, conversations, members, messages, users};
use super::{BLOCK_ORDER, Db, IDS_PER_QUERY, JOIN_ORDER};
use crate::domain::conversation::MEMBERS_LISTED;
use crate::domain::ports::Access;
use crate::domain::user::PasswordHash;
use crate::domain::{
    ConversationSummary, HistoryPage, HistoryQuery, Membership, Message, Timestamp, User, UserId,
    Visibility,
};

// ---------------------------------------------------------------- users

/// Stores a new user; a name taken in any case is a unique violation.
pub(super) fn insert_user(
    conn: &mut Db,
    user: &User,
    hash: &PasswordHash,
    now: Timestamp,
) -> QueryResult<()> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(user.id.as_str()),
            users::username.eq(user.username.as_str()),
            users::username_key.eq(user.username.key()),
            users::password_hash.eq(&hash.0),
            users::created_at.eq(now.millis()),
        ))
        .execute(conn)?;
    Ok(())
}

/// The user registered under the case-folded name `key`, with their hash.
pub(super) fn credentials(
    conn: &mut Db,
    key: &str,
) -> anyhow::Result<Option<(User, PasswordHash)>> {
    let row = users::table
        .filter(users::username_key.eq(key))
        .select((users::id, users::username, users::password_hash))
        .first::<(String, String, String)>(conn)
        .optional()?;
    row.map(|(id, name, hash)| Ok((user_from_row((id, name))?, PasswordHash(hash))))
        .transpose()
}

/// The user with this id.
pub(super) fn user(conn: &mut Db, id: &str) -> anyhow::Result<Option<User>> {
    users::table
        .find(id)
        .select((users::id, users::username))
        .first::<(String, String)>(conn)
        .optional()?
        .map(user_from_row)
        .transpose()
}

/// The users among `ids` that exist, with when each was last seen.
pub(super) fn users_last_seen(
    conn: &mut Db,
    ids: &[String],
) -> anyhow::Result<Vec<(User, Option<Timestamp>)>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let rows = users::table
            .filter(users::id.eq_any(chunk))
            .select((users::id, users::username, users::last_seen))
            .load::<(String, String, Option<i64>)>(conn)?;
        for (id, name, seen) in rows {
            out.push((user_from_row((id, name))?, seen.map(Timestamp::from_millis)));
        }
    }
    Ok(out)
}

/// Up to `limit` users whose case-folded name starts with `key_prefix`,
/// ordered by it.
pub(super) fn users_by_prefix(
    conn: &mut Db,
    key_prefix: &str,
    limit: u32,
) -> anyhow::Result<Vec<User>> {
    let (lo, hi) = prefix_range(key_prefix);
    users::table
        .filter(users::username_key.ge(lo))
        .filter(users::username_key.lt(hi))
        .order(users::username_key)
        .limit(i64::from(limit))
        .select((users::id, users::username))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(user_from_row)
        .collect()
}

/// The bounds of the keys starting with `prefix`. Keys compare bytewise
/// (SQLite's default, `COLLATE "C"` on PostgreSQL), and every key starting
/// with `prefix` sorts below the prefix followed by the highest code point.
fn prefix_range(prefix: &str) -> (&str, String) {
    (prefix, format!("{prefix}\u{10FFFF}"))
}

/// Records when a user was last seen.
pub(super) fn set_last_seen(conn: &mut Db, id: &str, at: Timestamp) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set(users::last_seen.eq(at.millis()))
        .execute(conn)?;
    Ok(())
}

// ---------------------------------------------------------------- conversations

/// The id of the direct conversation with this pair key.
pub(super) fn direct_by_key(conn: &mut Db, key: &str) -> QueryResult<Option<String>> {
    conversations::table
        .filter(conversations::direct_key.eq(key))
        .select(conversations::id)
        .first::<String>(conn)
        .optional()
}

/// Stores a new room, without members.
pub(super) fn insert_room(
    conn: &mut Db,
    id: &str,
    name: &str,
    name_key: &str,
    visibility: Visibility,
    creator: &str,
    now: Timestamp,
) -> QueryResult<()> {
    diesel::insert_into(conversations::table)
        .values((
            conversations::id.eq(id),
            conversations::kind.eq("room"),
            conversations::name.eq(name),
            conversations::name_key.eq(name_key),
            conversations::visibility.eq(visibility_column(visibility)),
            conversations::created_by.eq(creator),
            conversations::created_at.eq(now.millis()),
            conversations::last_activity.eq(now.millis()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Whether the conversation exists and whether `user` is in it.
pub(super) fn access(conn: &mut Db, conversation: &str, user: &str) -> anyhow::Result<Access> {
    let Some(row) = conversations::table
        .find(conversation)
        .select(conversation_columns!())
        .first::<ConversationRow>(conn)
        .optional()?
    else {
        return Ok(Access::NoSuchConversation);
    };
    let found = conversation_from_row(row)?;
    let read = members::table
        .find((conversation, user))
        .select(members::last_read_seq)
        .first::<i64>(conn)
        .optional()?;
    Ok(match read {
        Some(r) => Access::Member(
            found,
            Membership {
                last_read_seq: seq(r),
            },
        ),
        None => Access::NotMember(found),
    })
}

/// Every member of the conversation.
pub(super) fn member_ids(conn: &mut Db, conversation: &str) -> QueryResult<Vec<UserId>> {
    Ok(members::table
        .filter(members::conversation_id.eq(conversation))
        .select(members::user_id)
        .load::<String>(conn)?
        .into_iter()
        .map(UserId::new)
        .collect())
}

/// Removes a member and counts them out; false if they were not one.
pub(super) fn remove_member(conn: &mut Db, conversation: &str, user: &str) -> QueryResult<bool> {
    let removed = diesel::delete(members::table.find((conversation, user))).execute(conn)?;
    if removed > 0 {
        diesel::update(conversations::table.find(conversation))
            .set(conversations::member_count.eq(conversations::member_count - 1))
            .execute(conn)?;
    }
    Ok(removed > 0)
}

/// Moves `user`'s read marker up to `to`; false if it was not below it.
/// One statement: of concurrent moves to one seq, the later ones re-check
/// the condition after the first commits, and move nothing.
pub(super) fn advance_read_marker(
    conn: &mut Db,
    conversation: &str,
    user: &str,
    to: i64,
) -> QueryResult<bool> {
    let moved = diesel::update(members::table.find((conversation, user)))
        .filter(members::last_read_seq.lt(to))
        .set(members::last_read_seq.eq(to))
        .execute(conn)?;
    Ok(moved > 0)
}

/// Every user who shares a conversation with `user`, once, without them.
pub(super) fn contacts(conn: &mut Db, user: &str) -> QueryResult<Vec<UserId>> {
    let theirs = diesel::alias!(members as theirs);
    Ok(members::table
        .inner_join(
            theirs.on(theirs
                .field(members::conversation_id)
                .eq(members::conversation_id)),
        )
        .filter(members::user_id.eq(user))
        .filter(theirs.field(members::user_id).ne(user))
        .select(theirs.field(members::user_id))
        .distinct()
        .load::<String>(conn)?
        .into_iter()
        .map(UserId::new)
        .collect())
}

// ---------------------------------------------------------------- blocks

/// Removes a block; false when there was none.
pub(super) fn delete_block(conn: &mut Db, blocker: &str, blocked: &str) -> QueryResult<bool> {
    let removed = diesel::delete(blocks::table.find((blocker, blocked))).execute(conn)?;
    Ok(removed > 0)
}

/// The users `blocker` blocks, the earliest blocked first.
pub(super) fn blocked_by(conn: &mut Db, blocker: &str) -> anyhow::Result<Vec<User>> {
    blocks::table
        .inner_join(users::table.on(users::id.eq(blocks::blocked)))
        .filter(blocks::blocker.eq(blocker))
        // Block order even within one millisecond: `created_at` ties.
        .order(diesel::dsl::sql::<diesel::sql_types::BigInt>(BLOCK_ORDER))
        .select((users::id, users::username))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(user_from_row)
        .collect()
}

/// The users who block `user`.
pub(super) fn blockers_of(conn: &mut Db, user: &str) -> QueryResult<Vec<UserId>> {
    Ok(blocks::table
        .filter(blocks::blocked.eq(user))
        .select(blocks::blocker)
        .load::<String>(conn)?
        .into_iter()
        .map(UserId::new)
        .collect())
}

// ---------------------------------------------------------------- summaries

/// Every conversation `user` is in, most recently active first.
pub(super) fn conversations_of(
    conn: &mut Db,
    user: &str,
) -> anyhow::Result<Vec<ConversationSummary>> {
    let rows = members::table
        .inner_join(conversations::table)
        .filter(members::user_id.eq(user))
        .order((conversations::last_activity.desc(), conversations::id))
        .select(summary_columns!())
        .load::<SummaryRow>(conn)?;
    rows.into_iter().map(|row| summarize(conn, row)).collect()
}

/// The conversation as `viewer` sees it.
pub(super) fn summary(
    conn: &mut Db,
    conversation: &str,
    viewer: &str,
) -> anyhow::Result<Option<ConversationSummary>> {
    let row = conversations::table
        .left_join(
            members::table.on(members::conversation_id
                .eq(conversations::id)
                .and(members::user_id.eq(viewer))),
        )
        .filter(conversations::id.eq(conversation))
        .select(summary_columns!())
        .first::<SummaryRow>(conn)
        .optional()?;
    row.map(|row| summarize(conn, row)).transpose()
}

/// Up to `limit` rooms `viewer` may see whose case-folded name starts with
/// `key_prefix`, ordered by it and then by id; with `after`, those past
/// that room in this order.
pub(super) fn list_rooms(
    conn: &mut Db,
    viewer: &str,
    key_prefix: &str,
    after: Option<&str>,
    limit: u32,
) -> anyhow::Result<Vec<ConversationSummary>> {
    let (lo, hi) = prefix_range(key_prefix);
    let after = match after {
        Some(id) => conversations::table
            .filter(conversations::id.eq(id))
            .filter(conversations::kind.eq("room"))
            .select(conversations::name_key)
            .first::<Option<String>>(conn)
            .optional()?
            .flatten()
            .map(|key| (key, id.to_owned())),
        None => None,
    };
    let mut query = conversations::table
        .left_join(
            members::table.on(members::conversation_id
                .eq(conversations::id)
                .and(members::user_id.eq(viewer))),
        )
        .filter(conversations::kind.eq("room"))
        .filter(
            conversations::visibility
                .eq("public")
                .or(members::user_id.is_not_null()),
        )
        .filter(conversations::name_key.ge(lo))
        .filter(conversations::name_key.lt(&hi))
        .into_boxed();
    if let Some((key, id)) = after {
        query = query.filter(
            conversations::name_key
                .gt(key.clone())
                .or(conversations::name_key
                    .eq(key)
                    .and(conversations::id.gt(id))),
        );
    }
    let rows = query
        .order((conversations::name_key, conversations::id))
        .limit(i64::from(limit))
        .select(summary_columns!())
        .load::<SummaryRow>(conn)?;
    rows.into_iter().map(|row| summarize(conn, row)).collect()
}

/// Completes a [`SummaryRow`] with the listed members and, for members, the
/// newest message.
fn summarize(conn: &mut Db, row: SummaryRow) -> anyhow::Result<ConversationSummary> {
    let (row, member_count, last_read) = row;
    let conversation = conversation_from_row(row)?;
    let id = conversation.id.as_str();
    let listed = members::table
        .inner_join(users::table)
        .filter(members::conversation_id.eq(id))
        // Join order even within one millisecond, and a member who rejoins
        // goes to the back: `joined_at` tells neither.
        .order(diesel::dsl::sql::<diesel::sql_types::BigInt>(JOIN_ORDER))
        .limit(MEMBERS_LISTED as i64)
        .select((users::id, users::username))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(user_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let last_message = match (last_read, conversation.last_seq) {
        (None, _) | (_, 0) => None,
        (Some(_), last) => message_by_seq(conn, id, to_db_seq(last))?,
    };
    Ok(ConversationSummary {
        conversation,
        members: listed,
        member_count: seq(member_count),
        last_read_seq: last_read.map_or(0, seq),
        last_message,
    })
}

// ---------------------------------------------------------------- messages

/// One page of the conversation's history (see `MessageStore::history`).
pub(super) fn history(
    conn: &mut Db,
    conversation: &str,
    query: HistoryQuery,
) -> anyhow::Result<HistoryPage> {
    let upper = query.before_seq.map_or(i64::MAX, to_db_seq);
    let want = i64::from(query.limit) + 1;
    let base = messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::seq.lt(upper))
        .select(message_columns!());
    let mut rows: Vec<MessageRow> = match query.after_seq {
        Some(after) => base
            .filter(messages::seq.gt(to_db_seq(after)))
            .order(messages::seq.asc())
            .limit(want)
            .load(conn)?,
        None => base.order(messages::seq.desc()).limit(want).load(conn)?,
    };
    let has_more = rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    if query.after_seq.is_none() {
        rows.reverse();
    }
    let messages = rows
        .into_iter()
        .map(message_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(HistoryPage { messages, has_more })
}

fn message_by_seq(conn: &mut Db, conversation: &str, at: i64) -> anyhow::Result<Option<Message>> {
    messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::seq.eq(at))
        .select(message_columns!())
        .first::<MessageRow>(conn)
        .optional()?
        .map(message_from_row)
        .transpose()
}

/// The message with this id, if it is in this conversation.
pub(super) fn message_by_id(
    conn: &mut Db,
    conversation: &str,
    id: &str,
) -> anyhow::Result<Option<Message>> {
    messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::id.eq(id))
        .select(message_columns!())
        .first::<MessageRow>(conn)
        .optional()?
        .map(message_from_row)
        .transpose()
}

/// The message `sender` stored under `client_msg_id` in `conversation`.
pub(super) fn original(
    conn: &mut Db,
    conversation: &str,
    sender: &str,
    client_msg_id: &str,
) -> anyhow::Result<Option<Message>> {
    messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::sender_id.eq(sender))
        .filter(messages::client_msg_id.eq(client_msg_id))
        .select(message_columns!())
        .first::<MessageRow>(conn)
        .optional()?
        .map(message_from_row)
        .transpose()
}

/// Edits (`Some((body, at))`) or deletes (`None`) a message, and returns
/// it as it now is; `None` if there is no such message.
pub(super) fn update_message(
    conn: &mut Db,
    conversation: &str,
    id: &str,
    edit: Option<(String, Timestamp)>,
) -> anyhow::Result<Option<Message>> {
    let target = messages::table
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::id.eq(id));
    match edit {
        // An edit racing a delete must not bring text back into a deleted
        // message.
        Some((body, at)) => diesel::update(target)
            .filter(messages::deleted.eq(false))
            .set((messages::body.eq(body), messages::edited_at.eq(at.millis())))
            .execute(conn)?,
        // The text is gone for good, not just hidden.
        None => diesel::update(target)
            .set((messages::body.eq(""), messages::deleted.eq(true)))
            .execute(conn)?,
    };
    message_by_id(conn, conversation, id)
}

/// A message's body and deleted flag as stored, for tests that look past
/// the mapping (which blanks deleted bodies).
#[cfg(test)]
pub(super) fn raw_message(conn: &mut Db, id: &str) -> QueryResult<(String, bool)> {
    messages::table
        .find(id)
        .select((messages::body, messages::deleted))
        .first::<(String, bool)>(conn)
}
