//! The queries on conversations, their members and their summaries.

use diesel::QueryResult;

use crate::domain::ports::Access;
use crate::domain::{ConversationSummary, Timestamp, UserId, Visibility};

/// The queries on conversations and their members, on either backend's
/// connection.
pub trait ConversationQueries {
    /// The id of the direct conversation with this pair key.
    fn direct_by_key(&mut self, key: &str) -> QueryResult<Option<String>>;
    /// Stores a new direct conversation, without members; false if the
    /// pair has one already.
    fn insert_direct(
        &mut self,
        id: &str,
        key: &str,
        creator: &str,
        now: Timestamp,
    ) -> QueryResult<bool>;
    /// Stores a new room, without members.
    fn insert_room(
        &mut self,
        id: &str,
        name: &str,
        name_key: &str,
        visibility: Visibility,
        creator: &str,
        now: Timestamp,
    ) -> QueryResult<()>;
    /// Whether the conversation exists and whether `user` is in it.
    fn access(&mut self, conversation: &str, user: &str) -> anyhow::Result<Access>;
    /// Every member of the conversation.
    fn member_ids(&mut self, conversation: &str) -> QueryResult<Vec<UserId>>;
    /// Adds a member with the read marker at `last_read`; false if already one.
    fn add_member(
        &mut self,
        conversation: &str,
        user: &str,
        last_read: i64,
        now: i64,
    ) -> QueryResult<bool>;
    /// Removes a member and counts them out; false if they were not one.
    fn remove_member(&mut self, conversation: &str, user: &str) -> QueryResult<bool>;
    /// Moves `user`'s read marker up to `to`; false if it was not below it.
    /// One statement: of concurrent moves to one seq, the later ones
    /// re-check the condition after the first commits, and move nothing.
    fn advance_read_marker(&mut self, conversation: &str, user: &str, to: i64)
    -> QueryResult<bool>;
    /// Every user who shares a conversation with `user`, once, without them.
    fn contacts(&mut self, user: &str) -> QueryResult<Vec<UserId>>;
    /// Every conversation `user` is in, most recently active first.
    fn conversations_of(&mut self, user: &str) -> anyhow::Result<Vec<ConversationSummary>>;
    /// The conversation as `viewer` sees it.
    fn summary(
        &mut self,
        conversation: &str,
        viewer: &str,
    ) -> anyhow::Result<Option<ConversationSummary>>;
    /// Up to `limit` rooms `viewer` may see whose case-folded name starts
    /// with `key_prefix`, ordered by it and then by id; with `after`, those
    /// past that room in this order.
    fn list_rooms(
        &mut self,
        viewer: &str,
        key_prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<ConversationSummary>>;
}

/// Implements [`ConversationQueries`] for a backend's connection (see the module
/// documentation of `queries` for why a macro).
macro_rules! conversation_queries {
    ($conn:ty) => {
        const _: () = {
            use diesel::prelude::*;
            use $crate::adapters::store::common::{
                ConversationRow, SummaryRow, conversation_columns, conversation_from_row, seq,
                summary_columns, to_db_seq, user_from_row, visibility_column,
            };
            use $crate::adapters::store::queries::{
                ConversationQueries, MessageQueries, Sql, prefix_range,
            };
            use $crate::adapters::store::schema::{conversations, members, users};
            use $crate::domain::conversation::MEMBERS_LISTED;
            use $crate::domain::membership;
            use $crate::domain::ports::Access;
            use $crate::domain::{ConversationSummary, Membership, Timestamp, UserId, Visibility};

            impl ConversationQueries for $conn {
                fn direct_by_key(&mut self, key: &str) -> QueryResult<Option<String>> {
                    conversations::table
                        .filter(conversations::direct_key.eq(key))
                        .select(conversations::id)
                        .first::<String>(self)
                        .optional()
                }

                fn insert_direct(
                    &mut self,
                    id: &str,
                    key: &str,
                    creator: &str,
                    now: Timestamp,
                ) -> QueryResult<bool> {
                    let created = diesel::insert_into(conversations::table)
                        .values((
                            conversations::id.eq(id),
                            conversations::kind.eq("direct"),
                            conversations::direct_key.eq(key),
                            conversations::created_by.eq(creator),
                            conversations::created_at.eq(now.millis()),
                            conversations::last_activity.eq(now.millis()),
                        ))
                        .on_conflict(conversations::direct_key)
                        .do_nothing()
                        .execute(self)?;
                    Ok(created > 0)
                }

                fn insert_room(
                    &mut self,
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
                        .execute(self)?;
                    Ok(())
                }

                fn access(&mut self, conversation: &str, user: &str) -> anyhow::Result<Access> {
                    let Some(row) = conversations::table
                        .find(conversation)
                        .select(conversation_columns!())
                        .first::<ConversationRow>(self)
                        .optional()?
                    else {
                        return Ok(Access::NoSuchConversation);
                    };
                    let found = conversation_from_row(row)?;
                    let read = members::table
                        .find((conversation, user))
                        .select(members::last_read_seq)
                        .first::<i64>(self)
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

                fn member_ids(&mut self, conversation: &str) -> QueryResult<Vec<UserId>> {
                    Ok(members::table
                        .filter(members::conversation_id.eq(conversation))
                        .select(members::user_id)
                        .load::<String>(self)?
                        .into_iter()
                        .map(UserId::new)
                        .collect())
                }

                fn add_member(
                    &mut self,
                    conversation: &str,
                    user: &str,
                    last_read: i64,
                    now: i64,
                ) -> QueryResult<bool> {
                    let added = diesel::insert_into(members::table)
                        .values((
                            members::conversation_id.eq(conversation),
                            members::user_id.eq(user),
                            members::last_read_seq.eq(last_read),
                            members::joined_at.eq(now),
                        ))
                        .on_conflict_do_nothing()
                        .execute(self)?;
                    if added > 0 {
                        diesel::update(conversations::table.find(conversation))
                            .set(conversations::member_count.eq(conversations::member_count + 1))
                            .execute(self)?;
                    }
                    Ok(added > 0)
                }

                fn remove_member(&mut self, conversation: &str, user: &str) -> QueryResult<bool> {
                    let removed =
                        diesel::delete(members::table.find((conversation, user))).execute(self)?;
                    if removed > 0 {
                        diesel::update(conversations::table.find(conversation))
                            .set(conversations::member_count.eq(conversations::member_count - 1))
                            .execute(self)?;
                    }
                    Ok(removed > 0)
                }

                fn advance_read_marker(
                    &mut self,
                    conversation: &str,
                    user: &str,
                    to: i64,
                ) -> QueryResult<bool> {
                    let moved = diesel::update(members::table.find((conversation, user)))
                        .filter(members::last_read_seq.lt(to))
                        .set(members::last_read_seq.eq(to))
                        .execute(self)?;
                    Ok(moved > 0)
                }

                fn contacts(&mut self, user: &str) -> QueryResult<Vec<UserId>> {
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
                        .load::<String>(self)?
                        .into_iter()
                        .map(UserId::new)
                        .collect())
                }

                fn conversations_of(
                    &mut self,
                    user: &str,
                ) -> anyhow::Result<Vec<ConversationSummary>> {
                    let rows = members::table
                        .inner_join(conversations::table)
                        .filter(members::user_id.eq(user))
                        .order((conversations::last_activity.desc(), conversations::id))
                        .select(summary_columns!())
                        .load::<SummaryRow>(self)?;
                    rows.into_iter().map(|row| summarize(self, row)).collect()
                }

                fn summary(
                    &mut self,
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
                        .first::<SummaryRow>(self)
                        .optional()?;
                    row.map(|row| summarize(self, row)).transpose()
                }

                fn list_rooms(
                    &mut self,
                    viewer: &str,
                    key_prefix: &str,
                    after: Option<&str>,
                    limit: u32,
                ) -> anyhow::Result<Vec<ConversationSummary>> {
                    let (lo, hi) = prefix_range(key_prefix);
                    // The core's listing rule, as the filter's two lists.
                    let (everyone, members_only) = membership::listing();
                    let column = |v: Vec<Visibility>| -> Vec<&'static str> {
                        v.into_iter().map(visibility_column).collect()
                    };
                    let (everyone, members_only) = (column(everyone), column(members_only));
                    let after = match after {
                        Some(id) => conversations::table
                            .filter(conversations::id.eq(id))
                            .filter(conversations::kind.eq("room"))
                            .select(conversations::name_key)
                            .first::<Option<String>>(self)
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
                                .eq_any(&everyone)
                                .or(members::user_id
                                    .is_not_null()
                                    .and(conversations::visibility.eq_any(&members_only))),
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
                        .load::<SummaryRow>(self)?;
                    rows.into_iter().map(|row| summarize(self, row)).collect()
                }
            }

            /// Completes a [`SummaryRow`] with the listed members and, for members, the
            /// newest message.
            fn summarize(conn: &mut $conn, row: SummaryRow) -> anyhow::Result<ConversationSummary> {
                let (row, member_count, last_read) = row;
                let conversation = conversation_from_row(row)?;
                let id = conversation.id.as_str();
                let listed = members::table
                    .inner_join(users::table)
                    .filter(members::conversation_id.eq(id))
                    // Join order even within one millisecond, and a member who rejoins
                    // goes to the back: `joined_at` tells neither.
                    .order(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                        <$conn as Sql>::JOIN_ORDER,
                    ))
                    .limit(MEMBERS_LISTED as i64)
                    .select((users::id, users::username))
                    .load::<(String, String)>(conn)?
                    .into_iter()
                    .map(user_from_row)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let last_message = match (last_read, conversation.last_seq) {
                    (None, _) | (_, 0) => None,
                    (Some(_), last) => conn.message_by_seq(id, to_db_seq(last))?,
                };
                Ok(ConversationSummary {
                    conversation,
                    members: listed,
                    member_count: seq(member_count),
                    last_read_seq: last_read.map_or(0, seq),
                    last_message,
                })
            }
        };
    };
}
pub(crate) use conversation_queries;
