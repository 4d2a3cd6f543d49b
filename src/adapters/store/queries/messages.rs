//! The queries on messages.

use diesel::dsl::{Eq, Filter, InnerJoin, Select};
use diesel::prelude::*;

use crate::adapters::store::common::MessageColumns;
use crate::adapters::store::schema::{messages, users};
use crate::domain::{Attachment, HistoryPage, HistoryQuery, Message, Timestamp};

/// The query of [`messages_in`].
pub type MessagesIn<'a> = Select<
    Filter<InnerJoin<messages::table, users::table>, Eq<messages::conversation_id, &'a str>>,
    MessageColumns,
>;

/// The messages of `conversation`, joined to their senders, as
/// `MessageRow`s: what every query of messages starts from.
pub fn messages_in(conversation: &str) -> MessagesIn<'_> {
    messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .select(MessageColumns::default())
}

/// The queries on messages, on either backend's connection.
pub trait MessageQueries {
    /// One page of the conversation's history (see `MessageStore::history`).
    fn history(&mut self, conversation: &str, query: HistoryQuery) -> anyhow::Result<HistoryPage>;
    /// The message with this seq in this conversation.
    fn message_by_seq(&mut self, conversation: &str, at: i64) -> anyhow::Result<Option<Message>>;
    /// The message with this id, if it is in this conversation.
    fn message_by_id(&mut self, conversation: &str, id: &str) -> anyhow::Result<Option<Message>>;
    /// The message `sender` stored under `client_msg_id` in `conversation`.
    fn original(
        &mut self,
        conversation: &str,
        sender: &str,
        client_msg_id: &str,
    ) -> anyhow::Result<Option<Message>>;
    /// Edits (`Some((body, at))`) or deletes (`None`) a message, and
    /// returns it as it now is; `None` if there is no such message.
    fn update_message(
        &mut self,
        conversation: &str,
        id: &str,
        edit: Option<(String, Timestamp)>,
    ) -> anyhow::Result<Option<Message>>;
    /// Records that a new message carries `files`: who may read the
    /// message may now read them.
    fn record_attachments(
        &mut self,
        message: &str,
        conversation: &str,
        files: &[Attachment],
    ) -> diesel::QueryResult<()>;
    /// A message's body and deleted flag as stored, for tests that look
    /// past the mapping (which blanks deleted bodies).
    #[cfg(test)]
    fn raw_message(&mut self, id: &str) -> diesel::QueryResult<(String, bool)>;
}

/// Implements [`MessageQueries`] for a backend's connection (see the
/// module documentation of `queries` for why a macro).
macro_rules! message_queries {
    ($conn:ty) => {
        const _: () = {
            use diesel::dsl::Limit;
            use diesel::prelude::*;
            use diesel::query_dsl::LoadQuery;

            use $crate::adapters::store::common::{MessageRow, message_from_row, to_db_seq};
            use $crate::adapters::store::queries::{MessageQueries, messages_in};
            use $crate::adapters::store::schema::{message_files, messages};
            use $crate::domain::{Attachment, HistoryPage, HistoryQuery, Message, Timestamp};

            impl MessageQueries for $conn {
                fn history(
                    &mut self,
                    conversation: &str,
                    query: HistoryQuery,
                ) -> anyhow::Result<HistoryPage> {
                    let upper = query.before_seq.map_or(i64::MAX, to_db_seq);
                    let want = i64::from(query.limit) + 1;
                    let base = messages_in(conversation).filter(messages::seq.lt(upper));
                    let mut rows: Vec<MessageRow> = match query.after_seq {
                        Some(after) => base
                            .filter(messages::seq.gt(to_db_seq(after)))
                            .order(messages::seq.asc())
                            .limit(want)
                            .load(self)?,
                        None => base.order(messages::seq.desc()).limit(want).load(self)?,
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

                fn message_by_seq(
                    &mut self,
                    conversation: &str,
                    at: i64,
                ) -> anyhow::Result<Option<Message>> {
                    first_message(self, messages_in(conversation).filter(messages::seq.eq(at)))
                }

                fn message_by_id(
                    &mut self,
                    conversation: &str,
                    id: &str,
                ) -> anyhow::Result<Option<Message>> {
                    first_message(self, messages_in(conversation).filter(messages::id.eq(id)))
                }

                fn original(
                    &mut self,
                    conversation: &str,
                    sender: &str,
                    client_msg_id: &str,
                ) -> anyhow::Result<Option<Message>> {
                    let query = messages_in(conversation)
                        .filter(messages::sender_id.eq(sender))
                        .filter(messages::client_msg_id.eq(client_msg_id));
                    first_message(self, query)
                }

                fn update_message(
                    &mut self,
                    conversation: &str,
                    id: &str,
                    edit: Option<(String, Timestamp)>,
                ) -> anyhow::Result<Option<Message>> {
                    let target = messages::table
                        .filter(messages::conversation_id.eq(conversation))
                        .filter(messages::id.eq(id));
                    match edit {
                        // An edit racing a delete must not bring text back into a
                        // deleted message.
                        Some((body, at)) => diesel::update(target)
                            .filter(messages::deleted.eq(false))
                            .set((messages::body.eq(body), messages::edited_at.eq(at.millis())))
                            .execute(self)?,
                        // The text is gone for good, not just hidden, and
                        // the files it carried are no longer read through it.
                        // Only the rows of this conversation's message: an
                        // id asked for under another changes nothing.
                        None => {
                            diesel::delete(
                                message_files::table
                                    .filter(message_files::message_id.eq(id))
                                    .filter(message_files::conversation_id.eq(conversation)),
                            )
                            .execute(self)?;
                            diesel::update(target)
                                .set((
                                    messages::body.eq(""),
                                    messages::deleted.eq(true),
                                    messages::attachments.eq(None::<String>),
                                ))
                                .execute(self)?
                        }
                    };
                    self.message_by_id(conversation, id)
                }

                fn record_attachments(
                    &mut self,
                    message: &str,
                    conversation: &str,
                    files: &[Attachment],
                ) -> QueryResult<()> {
                    let rows: Vec<_> = files
                        .iter()
                        .map(|f| {
                            (
                                message_files::message_id.eq(message),
                                message_files::file_id.eq(f.id.as_str()),
                                message_files::conversation_id.eq(conversation),
                            )
                        })
                        .collect();
                    diesel::insert_into(message_files::table)
                        .values(rows)
                        .execute(self)
                        .map(drop)
                }

                #[cfg(test)]
                fn raw_message(&mut self, id: &str) -> QueryResult<(String, bool)> {
                    messages::table
                        .find(id)
                        .select((messages::body, messages::deleted))
                        .first::<(String, bool)>(self)
                }
            }

            /// The first message `query` finds, as a [`Message`].
            fn first_message<'q, Q>(conn: &mut $conn, query: Q) -> anyhow::Result<Option<Message>>
            where
                Q: RunQueryDsl<$conn> + diesel::query_dsl::methods::LimitDsl,
                Limit<Q>: LoadQuery<'q, $conn, MessageRow>,
            {
                query
                    .first::<MessageRow>(conn)
                    .optional()?
                    .map(message_from_row)
                    .transpose()
            }
        };
    };
}
pub(crate) use message_queries;
