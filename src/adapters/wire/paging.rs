//! Replies that list things: as many items as fit in one reply, and
//! whether more follow.

use serde::Serialize;
use serde_json::value::RawValue;

use super::dto::ConversationDto;
use crate::domain::ConversationSummary;

/// The most bytes of items one reply lists: `getHistory`, `listRooms` and
/// `getConversations` list fewer items, with `hasMore`, rather than more.
/// Far above any one item (a message of 4,000 escaped control characters
/// is 24 KB, a conversation with 100 members and such a last message under
/// 40 KB), so a reply always has room for its first.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Items serialized in turn until they would pass `budget` bytes, the first
/// always; and whether any was left out for it.
pub fn fit<T: Serialize>(
    items: impl ExactSizeIterator<Item = T>,
    budget: usize,
) -> (Vec<Box<RawValue>>, bool) {
    let total = items.len();
    let mut kept: Vec<Box<RawValue>> = Vec::with_capacity(total);
    let mut used = 0;
    for item in items {
        // Our own DTOs always serialize.
        let raw = serde_json::value::to_raw_value(&item).expect("wire DTOs serialize");
        // One comma between items.
        used += raw.get().len() + 1;
        if used > budget && !kept.is_empty() {
            break;
        }
        kept.push(raw);
    }
    let cut = kept.len() < total;
    (kept, cut)
}

/// As many of `list` as one reply holds ([`fit`]); whether more follow,
/// here or (`more`) beyond `list`; and the cursor to the next page: the id
/// of the last one listed.
pub fn conversation_page(
    list: &[ConversationSummary],
    more: bool,
) -> (Vec<Box<RawValue>>, bool, Option<&str>) {
    let (listed, cut) = fit(list.iter().map(ConversationDto::from), MAX_REPLY_BYTES);
    let has_more = more || cut;
    let next_cursor = has_more.then(|| list[listed.len() - 1].conversation.id.as_str());
    (listed, has_more, next_cursor)
}

/// `getHistory`'s ack content.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryContent {
    /// Oldest first.
    pub messages: Vec<Box<RawValue>>,
    /// More exist beyond this page, in the direction it was read.
    pub has_more: bool,
}

/// `listRooms`' ack content.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomsContent<'a> {
    /// By name.
    pub rooms: Vec<Box<RawValue>>,
    /// More rooms match: ask again with `cursor: nextCursor`.
    pub has_more: bool,
    /// What to pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<&'a str>,
}

/// `getConversations`' ack content.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationsContent<'a> {
    /// Most recently active first.
    pub conversations: Vec<Box<RawValue>>,
    /// More follow: ask again with `cursor: nextCursor`.
    pub has_more: bool,
    /// What to pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<&'a str>,
}
