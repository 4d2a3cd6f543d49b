//! The statements every append runs, written so that diesel keeps them
//! prepared. Its query builder prepares UPDATEs and raw SQL anew on each
//! call (and its transaction manager runs savepoints through `sqlite3_exec`),
//! which showed up as parsing and planning in the writer thread's profile;
//! these run the cached statement with new binds instead.

use diesel::QueryResult;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{RunQueryDsl, SqliteConnection};

/// A statement without parameters, cached under its SQL text.
pub struct Fixed(pub &'static str);

impl QueryFragment<Sqlite> for Fixed {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

impl QueryId for Fixed {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl RunQueryDsl<SqliteConnection> for Fixed {}

/// Opens the savepoint one write of a batch runs in.
pub const SAVEPOINT: Fixed = Fixed("SAVEPOINT job");
/// Keeps the write's changes in the batch's transaction.
pub const RELEASE: Fixed = Fixed("RELEASE job");
/// Undoes the write's changes (the savepoint must still be released).
pub const ROLLBACK: Fixed = Fixed("ROLLBACK TO job");

/// Moves a conversation's last seq and activity time forward.
pub struct BumpSeq<'a> {
    /// The conversation.
    pub conversation: &'a str,
    /// Its new last seq.
    pub seq: i64,
    /// When.
    pub at: i64,
}

impl QueryFragment<Sqlite> for BumpSeq<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE conversations SET last_seq = ");
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        out.push_sql(", last_activity = ");
        out.push_bind_param::<BigInt, _>(&self.at)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(self.conversation)?;
        Ok(())
    }
}

impl QueryId for BumpSeq<'_> {
    type QueryId = BumpSeq<'static>;
}

impl RunQueryDsl<SqliteConnection> for BumpSeq<'_> {}

/// Stores one new message, under the integer keys of its conversation and
/// sender (SQLite's `message_rows`, behind the `messages` view).
pub struct InsertMessage<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its conversation's key.
    pub conversation: i64,
    /// Its seq there.
    pub seq: i64,
    /// Its sender's key.
    pub sender: i64,
    /// The text.
    pub body: &'a str,
    /// The sender's idempotency key.
    pub client_msg_id: Option<&'a str>,
    /// When.
    pub at: i64,
    /// The files it carries, as JSON (NULL for none).
    pub attachments: Option<&'a str>,
}

impl QueryFragment<Sqlite> for InsertMessage<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO message_rows \
             (id, conversation, seq, sender, body, client_msg_id, created_at, attachments) \
             VALUES (",
        );
        out.push_bind_param::<Text, _>(self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.conversation)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.sender)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.body)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.client_msg_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.attachments)?;
        out.push_sql(")");
        Ok(())
    }
}

impl QueryId for InsertMessage<'_> {
    type QueryId = InsertMessage<'static>;
}

impl RunQueryDsl<SqliteConnection> for InsertMessage<'_> {}
