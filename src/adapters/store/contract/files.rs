//! The `FileStore` part of the store contract: file rows and the quota
//! checked with their insert (also by two stores at once), who may read a
//! file through the messages that carry it, what the sweep may delete, and
//! resumable uploads.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::{Fixture, create_room, direct, join, new_message, query, register, sorted, stored, ts};
use crate::domain::file::{Attachment, FileCreated, FileInfo, Upload};
use crate::domain::message::MessageChange;
use crate::domain::ports::{FileStore, MessageStore};
use crate::domain::{
    ConversationId, FileId, Message, MessageBody, Timestamp, UploadId, User, Visibility,
};

/// Quota large enough not to matter.
const PLENTY: u64 = 1 << 40;

/// A lowercase hex SHA-256 look-alike made of `c`.
fn sha(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// A file of `size` bytes `uploader` stored at `at`; "img" files are
/// images with a thumbnail.
fn file(id: &str, uploader: &User, size: u64, at: Timestamp) -> FileInfo {
    let image = id.starts_with("img");
    FileInfo {
        id: FileId::new(id),
        uploader: uploader.id.clone(),
        name: format!("{id} ünïcode.bin"),
        size,
        content_type: if image { "image/png" } else { "text/plain" }.to_owned(),
        sha256: sha(if image { 'a' } else { 'b' }),
        width: image.then_some(1_024),
        height: image.then_some(768),
        thumbnail: image.then(|| sha('c')),
        created_at: at,
    }
}

async fn create<S: FileStore>(store: &S, file: &FileInfo) {
    assert_eq!(
        store.create_file(file, PLENTY).await.unwrap(),
        FileCreated::Created,
        "{file:?}"
    );
}

fn fid(raw: &str) -> FileId {
    FileId::new(raw)
}

fn sorted_files(files: Vec<FileInfo>) -> Vec<FileInfo> {
    let mut files = files;
    files.sort_by(|a, b| a.id.cmp(&b.id));
    files
}

/// Appends a message from `sender` carrying `files` and returns it.
async fn carry<S: MessageStore>(
    store: &S,
    conversation: &ConversationId,
    sender: &User,
    files: &[&FileInfo],
) -> Message {
    let new = crate::domain::message::NewMessage {
        body: MessageBody::caption("").unwrap(),
        attachments: files.iter().map(|f| Attachment::from(*f)).collect(),
        ..new_message(conversation, sender, "x", None, ts(1_000))
    };
    stored(store.append(new).await.expect("the message is appended")).0
}

async fn readable<S: FileStore>(store: &S, file: &FileInfo, user: &User) -> bool {
    store.referenced_for(&file.id, &user.id).await.unwrap()
}

async fn history_attachments<S: MessageStore>(
    store: &S,
    conversation: &ConversationId,
) -> Vec<Vec<Attachment>> {
    store
        .history(conversation, query(None, None, 50))
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.attachments)
        .collect()
}

// ---------------------------------------------------------------- files

pub(crate) async fn a_created_file_is_found_by_id_and_among_files<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let image = file("img1", &ann, 2_000, ts(5));
    let text = file("txt1", &ann, 12, ts(6));
    create(s, &image).await;
    create(s, &text).await;
    assert_eq!(s.file(&image.id).await.unwrap(), Some(image.clone()));
    assert_eq!(s.file(&text.id).await.unwrap(), Some(text.clone()));
    assert_eq!(s.file(&fid("nope")).await.unwrap(), None);
    let found = s
        .files(&[fid("txt1"), fid("nope"), fid("img1")])
        .await
        .unwrap();
    assert_eq!(sorted_files(found), vec![image, text]);
    assert!(s.files(&[]).await.unwrap().is_empty());
}

pub(crate) async fn create_file_refuses_past_the_quota_and_stores_nothing<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    for (id, size) in [("a1", 10), ("a2", 10)] {
        let created = s.create_file(&file(id, &ann, size, ts(0)), 25).await;
        assert_eq!(created.unwrap(), FileCreated::Created, "{id}");
    }
    let over = file("a3", &ann, 6, ts(0));
    assert_eq!(
        s.create_file(&over, 25).await.unwrap(),
        FileCreated::OverQuota
    );
    assert_eq!(s.file(&over.id).await.unwrap(), None, "nothing is stored");
    assert_eq!(s.used_bytes(&ann.id).await.unwrap(), 20);
    // Exactly at the quota is within it.
    let last = file("a4", &ann, 5, ts(0));
    assert_eq!(
        s.create_file(&last, 25).await.unwrap(),
        FileCreated::Created
    );
    // Another user's files count against their own quota only.
    let bobs = file("b1", &bob, 25, ts(0));
    assert_eq!(
        s.create_file(&bobs, 25).await.unwrap(),
        FileCreated::Created
    );
}

pub(crate) async fn used_bytes_sums_the_sizes_of_a_users_files<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    assert_eq!(s.used_bytes(&ann.id).await.unwrap(), 0);
    create(s, &file("a1", &ann, 3_000_000_000, ts(0))).await;
    create(s, &file("a2", &ann, 7, ts(0))).await;
    create(s, &file("b1", &bob, 11, ts(0))).await;
    assert_eq!(s.used_bytes(&ann.id).await.unwrap(), 3_000_000_007);
    assert_eq!(s.used_bytes(&bob.id).await.unwrap(), 11);
}

pub(crate) async fn of_concurrent_files_that_together_exceed_the_quota_at_most_one_is_stored<
    F: Fixture,
>(
    f: F,
) {
    let stores = [f.store().clone(), f.another().await];
    // Several rounds, each a new user: a race has more than one chance.
    for round in 0..5 {
        let user = register(&stores[0], &format!("user{round}")).await;
        let barrier = Arc::new(Barrier::new(2));
        let tries = (0..2).map(|i| {
            let store = stores[i].clone();
            let barrier = barrier.clone();
            let file = file(&format!("r{round}f{i}"), &user, 10, ts(0));
            tokio::spawn(async move {
                barrier.wait().await;
                store.create_file(&file, 15).await.unwrap()
            })
        });
        let outcomes: Vec<FileCreated> = futures::future::join_all(tries)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let created = outcomes
            .iter()
            .filter(|o| **o == FileCreated::Created)
            .count();
        // Each fits alone, so exactly one: at most one by the lock, at
        // least one because a refusal must see the other's row.
        assert_eq!(created, 1, "round {round}: {outcomes:?}");
        assert_eq!(stores[1].used_bytes(&user.id).await.unwrap(), 10);
    }
}

// ---------------------------------------------------------------- references

pub(crate) async fn a_file_is_readable_by_the_members_of_a_conversation_whose_message_carries_it<
    F: Fixture,
>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    let cid = register(s, "cid").await;
    let room = create_room(s, "files", Visibility::Public, &ann, ts(0)).await;
    join(s, &room, &bob, ts(0)).await;
    let image = file("img1", &ann, 100, ts(0));
    let text = file("txt1", &ann, 10, ts(0));
    create(s, &image).await;
    create(s, &text).await;
    for who in [&ann, &bob, &cid] {
        assert!(!readable(s, &image, who).await, "not attached yet");
    }
    let sent = carry(s, &room, &ann, &[&text, &image]).await;
    let expected = vec![Attachment::from(&text), Attachment::from(&image)];
    assert_eq!(sent.attachments, expected, "the append answers them");
    assert!(expected[1].thumbnail && !expected[0].thumbnail);
    assert!(readable(s, &image, &ann).await);
    assert!(readable(s, &image, &bob).await);
    assert!(readable(s, &text, &bob).await);
    assert!(!readable(s, &image, &cid).await, "not a member");
    // Reads carry the metadata, in the order sent.
    assert_eq!(history_attachments(s, &room).await, vec![expected.clone()]);
    let read = s.message(&room, &sent.id).await.unwrap().unwrap();
    assert_eq!(read.attachments, expected);
    assert_eq!(read.body, "", "a caption may be empty");
    // A member who leaves no longer reads it; one who stays does.
    assert!(s.remove_member(&room, &bob.id).await.unwrap());
    assert!(!readable(s, &image, &bob).await, "removed");
    assert!(readable(s, &image, &ann).await);
}

pub(crate) async fn a_deleted_message_no_longer_makes_its_files_readable<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    let dm = direct(s, &ann, &bob).await;
    let kept = file("kept", &ann, 10, ts(0));
    let gone = file("gone", &ann, 10, ts(0));
    create(s, &kept).await;
    create(s, &gone).await;
    let first = carry(s, &dm, &ann, &[&kept, &gone]).await;
    let second = carry(s, &dm, &ann, &[&kept]).await;
    // An edit keeps the files.
    let edited = s
        .update_message(
            &dm,
            &first.id,
            MessageChange::Edit {
                body: MessageBody::parse("see these").unwrap(),
                at: ts(2_000),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(edited.attachments.len(), 2);
    assert!(readable(s, &gone, &bob).await);
    let deleted = s
        .update_message(&dm, &first.id, MessageChange::Delete)
        .await
        .unwrap()
        .unwrap();
    assert!(deleted.attachments.is_empty(), "{deleted:?}");
    assert!(
        !readable(s, &gone, &bob).await,
        "its only message is deleted"
    );
    assert!(!readable(s, &gone, &ann).await);
    assert!(readable(s, &kept, &bob).await, "another message carries it");
    let read = s.message(&dm, &first.id).await.unwrap().unwrap();
    assert!(read.attachments.is_empty(), "{read:?}");
    assert_eq!(
        history_attachments(s, &dm).await,
        vec![Vec::new(), vec![Attachment::from(&kept)]]
    );
    s.update_message(&dm, &second.id, MessageChange::Delete)
        .await
        .unwrap();
    assert!(!readable(s, &kept, &bob).await, "no message carries it now");
}

pub(crate) async fn deleting_a_message_under_another_conversation_keeps_its_files_readable<
    F: Fixture,
>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    let dm = direct(s, &ann, &bob).await;
    let other = direct(s, &ann, &ann).await;
    let shared = file("f1", &ann, 10, ts(0));
    create(s, &shared).await;
    let sent = carry(s, &dm, &ann, &[&shared]).await;
    let answer = s
        .update_message(&other, &sent.id, MessageChange::Delete)
        .await
        .unwrap();
    assert_eq!(answer, None, "not a message of that conversation");
    assert!(readable(s, &shared, &bob).await, "nothing changed");
    let read = s.message(&dm, &sent.id).await.unwrap().unwrap();
    assert_eq!(read.attachments, vec![Attachment::from(&shared)]);
}

// ---------------------------------------------------------------- the sweep

pub(crate) async fn only_old_files_no_message_carries_are_unreferenced_and_deleted<F: Fixture>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    let dm = direct(s, &ann, &bob).await;
    let old = file("old", &ann, 10, ts(0));
    let older = file("older", &ann, 10, ts(-10));
    let new = file("new", &ann, 10, ts(10_000));
    let carried = file("carried", &ann, 10, ts(-20));
    for f in [&old, &older, &new, &carried] {
        create(s, f).await;
    }
    let message = carry(s, &dm, &ann, &[&carried]).await;
    let ids = |files: Vec<FileInfo>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
    // Before `before`, oldest first, never a carried one.
    assert_eq!(
        ids(s.unreferenced_files(ts(5_000), 100).await.unwrap()),
        vec![older.id.clone(), old.id.clone()]
    );
    assert_eq!(
        ids(s.unreferenced_files(ts(5_000), 1).await.unwrap()),
        vec![older.id.clone()]
    );
    assert_eq!(
        ids(s.unreferenced_files(ts(0), 100).await.unwrap()),
        vec![older.id.clone()],
        "created exactly at `before` is not before it"
    );
    assert_eq!(
        ids(s.unreferenced_files(ts(20_000), 100).await.unwrap()),
        vec![older.id.clone(), old.id.clone(), new.id.clone()]
    );
    // A carried file asked for is kept (and not answered).
    let deleted = s
        .delete_files(&[old.id.clone(), carried.id.clone(), fid("nope")])
        .await
        .unwrap();
    assert_eq!(deleted, vec![old.clone()]);
    assert_eq!(s.file(&old.id).await.unwrap(), None);
    assert_eq!(s.file(&carried.id).await.unwrap(), Some(carried.clone()));
    assert_eq!(s.used_bytes(&ann.id).await.unwrap(), 30);
    // Once its message is deleted it goes like any other.
    s.update_message(&dm, &message.id, MessageChange::Delete)
        .await
        .unwrap();
    assert_eq!(
        ids(s.unreferenced_files(ts(5_000), 100).await.unwrap()),
        vec![carried.id.clone(), older.id.clone()]
    );
    let deleted = s
        .delete_files(std::slice::from_ref(&carried.id))
        .await
        .unwrap();
    assert_eq!(deleted, vec![carried.clone()]);
    assert_eq!(s.file(&carried.id).await.unwrap(), None);
}

pub(crate) async fn referenced_blobs_are_those_a_file_names_as_bytes_or_thumbnail<F: Fixture>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let image = file("img1", &ann, 10, ts(0));
    let twin = file("img2", &ann, 10, ts(0));
    create(s, &image).await;
    create(s, &twin).await;
    let asked = vec![sha('a'), sha('c'), sha('d')];
    assert_eq!(
        sorted(s.referenced_blobs(&asked).await.unwrap()),
        vec![sha('a'), sha('c')]
    );
    // Shared content stays while one file still names it.
    s.delete_files(std::slice::from_ref(&image.id))
        .await
        .unwrap();
    assert_eq!(
        sorted(s.referenced_blobs(&asked).await.unwrap()),
        vec![sha('a'), sha('c')]
    );
    s.delete_files(std::slice::from_ref(&twin.id))
        .await
        .unwrap();
    assert!(s.referenced_blobs(&asked).await.unwrap().is_empty());
    assert!(s.referenced_blobs(&[]).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- uploads

fn upload(id: &str, user: &User, expires_at: Timestamp) -> Upload {
    Upload {
        id: UploadId::new(id),
        user: user.id.clone(),
        length: 5_000_000_000,
        offset: 0,
        name: "big ünïcode.iso".to_owned(),
        created_at: ts(0),
        expires_at,
        file: None,
    }
}

pub(crate) async fn an_upload_advances_only_from_where_it_stands_until_deleted<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let u = upload("u1", &ann, ts(100_000));
    s.create_upload(&u).await.unwrap();
    assert_eq!(s.upload(&u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(s.upload(&UploadId::new("nope")).await.unwrap(), None);
    assert!(s.advance_upload(&u.id, 0, 10).await.unwrap());
    assert!(
        !s.advance_upload(&u.id, 0, 20).await.unwrap(),
        "a stale offset moves nothing"
    );
    assert_eq!(s.upload(&u.id).await.unwrap().unwrap().offset, 10);
    assert!(s.advance_upload(&u.id, 10, 4_000_000_000).await.unwrap());
    assert_eq!(
        s.upload(&u.id).await.unwrap(),
        Some(Upload {
            offset: 4_000_000_000,
            ..u.clone()
        })
    );
    assert!(
        !s.advance_upload(&UploadId::new("nope"), 0, 1)
            .await
            .unwrap()
    );
    assert!(s.delete_upload(&u.id).await.unwrap());
    assert!(!s.delete_upload(&u.id).await.unwrap(), "already gone");
    assert_eq!(s.upload(&u.id).await.unwrap(), None);
    assert!(!s.advance_upload(&u.id, 4_000_000_000, 5).await.unwrap());
}

pub(crate) async fn expired_uploads_are_those_expiring_before_now_soonest_first<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    let late = upload("late", &ann, ts(300));
    let early = upload("early", &bob, ts(100));
    let middle = upload("middle", &ann, ts(200));
    for u in [&late, &early, &middle] {
        s.create_upload(u).await.unwrap();
    }
    assert_eq!(
        s.expired_uploads(ts(250), 10).await.unwrap(),
        vec![early.clone(), middle.clone()]
    );
    assert_eq!(
        s.expired_uploads(ts(250), 1).await.unwrap(),
        vec![early.clone()]
    );
    assert!(
        s.expired_uploads(ts(100), 10).await.unwrap().is_empty(),
        "expiring exactly now is not expired"
    );
    s.delete_upload(&early.id).await.unwrap();
    assert_eq!(
        s.expired_uploads(ts(1_000), 10).await.unwrap(),
        vec![middle, late]
    );
}

pub(crate) async fn uploads_under_way_reserve_quota_until_their_file_takes_it<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let u = Upload {
        length: 40,
        ..upload("u1", &ann, ts(100_000))
    };
    s.create_upload(&u).await.unwrap();
    assert_eq!(s.used_bytes(&ann.id).await.unwrap(), 40, "reserved");
    // Another file must fit beside the reservation.
    assert_eq!(
        s.create_file(&file("f1", &ann, 70, ts(0)), 100)
            .await
            .unwrap(),
        FileCreated::OverQuota
    );
    create(s, &file("f2", &ann, 60, ts(0))).await;
    assert_eq!(s.used_bytes(&ann.id).await.unwrap(), 100);
    // The upload's own file takes its reservation, not a second share.
    let made = file("f3", &ann, 40, ts(0));
    assert_eq!(
        s.complete_upload(&made, 100, &u.id).await.unwrap(),
        FileCreated::Created
    );
    assert_eq!(s.used_bytes(&ann.id).await.unwrap(), 100);
    assert_eq!(
        s.upload(&u.id).await.unwrap().unwrap().file,
        Some(made.id.clone()),
        "a complete upload names its file"
    );
    assert_eq!(s.file(&made.id).await.unwrap(), Some(made));
    // Over the quota: neither the file nor the completion is kept.
    let v = Upload {
        length: 1,
        ..upload("u2", &ann, ts(100_000))
    };
    s.create_upload(&v).await.unwrap();
    let late = file("f4", &ann, 1, ts(0));
    assert_eq!(
        s.complete_upload(&late, 100, &v.id).await.unwrap(),
        FileCreated::OverQuota
    );
    assert_eq!(s.file(&late.id).await.unwrap(), None);
    assert_eq!(s.upload(&v.id).await.unwrap().unwrap().file, None);
}
