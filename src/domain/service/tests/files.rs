//! Unit tests of files: admitting uploads, storing their rows under the
//! quota, who may read a file, resumable uploads, and what a sent message
//! may carry, with every port mocked. A child of the service's test module:
//! it reuses its [`Harness`] (max file 100 bytes, quota 250).
use super::*;

use crate::domain::error::FileError;
use crate::domain::file::{Attachment, FileCreated, FileInfo, Upload, UploadRefused};
use crate::domain::ids::{FileId, UploadId};

fn file_id(raw: &str) -> FileId {
    FileId::new(raw)
}

/// A file `uploader` stored: 10 bytes, a PNG with a thumbnail when `raw`
/// ends in "png", else plain text.
fn file(raw: &str, uploader: &str) -> FileInfo {
    let image = raw.ends_with("png");
    FileInfo {
        id: file_id(raw),
        uploader: uid(uploader),
        name: format!("{raw}.bin"),
        size: 10,
        content_type: if image { "image/png" } else { "text/plain" }.to_owned(),
        sha256: format!("sha-of-{raw}"),
        width: image.then_some(640),
        height: image.then_some(480),
        thumbnail: image.then(|| format!("thumb-of-{raw}")),
        created_at: NOW,
    }
}

/// The store answers `used_bytes(user)` once with `used`.
fn expect_used(h: &mut Harness, user: &str, used: u64) {
    let who = uid(user);
    h.files
        .expect_used_bytes()
        .withf(move |u| *u == who)
        .times(1)
        .return_once(move |_| Ok(used));
}

/// The store answers `file(id)` once with `found`.
fn expect_file(h: &mut Harness, id: &str, found: Option<FileInfo>) {
    let wanted = file_id(id);
    h.files
        .expect_file()
        .withf(move |i| *i == wanted)
        .times(1)
        .return_once(move |_| Ok(found));
}

// ------------------------------------------------------------ admit_upload

#[tokio::test]
async fn an_upload_within_the_size_and_the_quota_is_admitted() {
    let mut h = Harness::new();
    expect_used(&mut h, "ann", 150);
    h.build().admit_upload(&uid("ann"), 100).await.unwrap();
}

#[tokio::test]
async fn an_empty_upload_is_refused() {
    let mut h = Harness::new();
    h.files.expect_used_bytes().returning(|_| Ok(0));
    let err = h.build().admit_upload(&uid("ann"), 0).await.unwrap_err();
    assert!(
        matches!(err, FileError::Refused(UploadRefused::Empty)),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_upload_larger_than_the_largest_file_is_refused_naming_the_limit() {
    let mut h = Harness::new();
    h.files.expect_used_bytes().returning(|_| Ok(0));
    let err = h.build().admit_upload(&uid("ann"), 101).await.unwrap_err();
    assert!(
        matches!(err, FileError::Refused(UploadRefused::TooLarge(100))),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_upload_is_refused_when_the_bytes_the_store_counts_leave_no_room_for_it() {
    let mut h = Harness::new();
    // 200 kept + 51 new is past 250; the same 51 bytes fit a user who
    // keeps 199, so it is the store's count that refuses.
    expect_used(&mut h, "ann", 200);
    expect_used(&mut h, "bob", 199);
    let service = h.build();
    let err = service.admit_upload(&uid("ann"), 51).await.unwrap_err();
    assert!(
        matches!(err, FileError::Refused(UploadRefused::OverQuota(250))),
        "{err:?}"
    );
    service.admit_upload(&uid("bob"), 51).await.unwrap();
}

#[tokio::test]
async fn admitting_an_upload_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.files
        .expect_used_bytes()
        .times(1)
        .returning(|_| Err(store_error()));
    let err = h.build().admit_upload(&uid("ann"), 10).await.unwrap_err();
    assert!(matches!(err, FileError::Unknown(_)), "{err:?}");
}

// ------------------------------------------------------------ store_file

#[tokio::test]
async fn a_stored_file_is_created_with_the_quota_and_returned() {
    let mut h = Harness::new();
    let f = file("f1", "ann");
    let expected = f.clone();
    h.files
        .expect_create_file()
        .withf(move |file, quota| *file == expected && *quota == 250)
        .times(1)
        .returning(|_, _| Ok(FileCreated::Created));
    assert_eq!(h.build().store_file(f.clone()).await.unwrap(), f);
}

#[tokio::test]
async fn a_file_the_store_finds_over_the_quota_is_refused() {
    let mut h = Harness::new();
    h.files
        .expect_create_file()
        .times(1)
        .returning(|_, _| Ok(FileCreated::OverQuota));
    let err = h.build().store_file(file("f1", "ann")).await.unwrap_err();
    assert!(
        matches!(err, FileError::Refused(UploadRefused::OverQuota(250))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_file_larger_than_the_largest_is_refused_without_asking_the_store() {
    let mut h = Harness::new();
    h.files.expect_create_file().never();
    let big = FileInfo {
        size: 101,
        ..file("f1", "ann")
    };
    let err = h.build().store_file(big).await.unwrap_err();
    assert!(
        matches!(err, FileError::Refused(UploadRefused::TooLarge(100))),
        "{err:?}"
    );
}

#[tokio::test]
async fn storing_a_file_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.files
        .expect_create_file()
        .times(1)
        .returning(|_, _| Err(store_error()));
    let err = h.build().store_file(file("f1", "ann")).await.unwrap_err();
    assert!(matches!(err, FileError::Unknown(_)), "{err:?}");
}

// ------------------------------------------------------------ readable_file

#[tokio::test]
async fn the_uploader_may_read_their_file_without_a_message_carrying_it() {
    let mut h = Harness::new();
    expect_file(&mut h, "f1", Some(file("f1", "ann")));
    h.files.expect_referenced_for().never();
    let got = h
        .build()
        .readable_file(&uid("ann"), &file_id("f1"))
        .await
        .unwrap();
    assert_eq!(got, file("f1", "ann"));
}

#[tokio::test]
async fn another_user_may_read_a_file_a_message_in_their_conversation_carries() {
    let mut h = Harness::new();
    expect_file(&mut h, "f1", Some(file("f1", "ann")));
    h.files
        .expect_referenced_for()
        .withf(|f, u| *f == file_id("f1") && *u == uid("bob"))
        .times(1)
        .returning(|_, _| Ok(true));
    let got = h
        .build()
        .readable_file(&uid("bob"), &file_id("f1"))
        .await
        .unwrap();
    assert_eq!(got, file("f1", "ann"));
}

/// What `bob` gets asking for "f1": stored by ann and not carried where
/// bob may read when `exists`, else not stored at all.
async fn unreadable(exists: bool) -> FileError {
    let mut h = Harness::new();
    expect_file(&mut h, "f1", exists.then(|| file("f1", "ann")));
    if exists {
        h.files
            .expect_referenced_for()
            .withf(|f, u| *f == file_id("f1") && *u == uid("bob"))
            .times(1)
            .returning(|_, _| Ok(false));
    } else {
        h.files.expect_referenced_for().never();
    }
    h.build()
        .readable_file(&uid("bob"), &file_id("f1"))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_file_no_readable_message_carries_is_not_found_to_others() {
    let err = unreadable(true).await;
    assert!(matches!(err, FileError::NotFound), "{err:?}");
}

#[tokio::test]
async fn a_missing_file_is_not_found() {
    let err = unreadable(false).await;
    assert!(matches!(err, FileError::NotFound), "{err:?}");
}

#[tokio::test]
async fn someone_elses_file_and_a_missing_one_answer_exactly_alike() {
    let (theirs, missing) = (unreadable(true).await, unreadable(false).await);
    assert_eq!(theirs.to_string(), missing.to_string());
    assert_eq!(format!("{theirs:?}"), format!("{missing:?}"));
}

#[tokio::test]
async fn reading_a_file_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.files
        .expect_file()
        .times(1)
        .returning(|_| Err(store_error()));
    let err = h
        .build()
        .readable_file(&uid("ann"), &file_id("f1"))
        .await
        .unwrap_err();
    assert!(matches!(err, FileError::Unknown(_)), "{err:?}");
}

// ------------------------------------------------------------ uploads

fn upload(user: &str, expires_at: Timestamp) -> Upload {
    Upload {
        id: UploadId::new("u1"),
        user: uid(user),
        length: 50,
        offset: 20,
        name: "notes.txt".to_owned(),
        created_at: t(NOW.millis() - 1_000),
        expires_at,
        file: None,
    }
}

/// What `upload_of(user, "u1")` answers when the store holds `stored`.
async fn upload_of(user: &str, stored: Option<Upload>) -> Result<Upload, FileError> {
    let mut h = Harness::new();
    h.files
        .expect_upload()
        .withf(|id| *id == UploadId::new("u1"))
        .times(1)
        .return_once(move |_| Ok(stored));
    h.build().upload_of(&uid(user), &UploadId::new("u1")).await
}

#[tokio::test]
async fn ones_own_unexpired_upload_is_found() {
    let live = upload("ann", t(NOW.millis() + 1));
    assert_eq!(upload_of("ann", Some(live.clone())).await.unwrap(), live);
}

#[tokio::test]
async fn another_users_upload_is_not_found() {
    let live = upload("ann", t(NOW.millis() + 60_000));
    let err = upload_of("bob", Some(live)).await.unwrap_err();
    assert!(matches!(err, FileError::NotFound), "{err:?}");
}

#[tokio::test]
async fn an_expired_upload_is_gone_to_its_owner_as_expired() {
    for expires in [NOW.millis(), NOW.millis() - 1] {
        let err = upload_of("ann", Some(upload("ann", t(expires))))
            .await
            .unwrap_err();
        assert!(
            matches!(err, FileError::UploadExpired),
            "{expires}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_upload_is_not_found() {
    let err = upload_of("ann", None).await.unwrap_err();
    assert!(matches!(err, FileError::NotFound), "{err:?}");
}

#[tokio::test]
async fn starting_an_upload_admits_its_length_before_recording_it() {
    let mut h = Harness::new();
    expect_used(&mut h, "ann", 240);
    h.files.expect_create_upload().never();
    let err = h
        .build()
        .start_upload(upload("ann", t(NOW.millis() + 60_000)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FileError::Refused(UploadRefused::OverQuota(250))),
        "{err:?}"
    );
}

#[tokio::test]
async fn advancing_an_upload_moves_it_from_its_offset() {
    let mut h = Harness::new();
    h.files
        .expect_advance_upload()
        .withf(|id, from, to| *id == UploadId::new("u1") && *from == 20 && *to == 35)
        .times(1)
        .returning(|_, _, _| Ok(false));
    let moved = h
        .build()
        .advance_upload(&upload("ann", t(NOW.millis() + 60_000)), 35)
        .await
        .unwrap();
    assert!(!moved, "the store's answer is passed on");
}

// ------------------------------------------------------------ attachments

/// The store answers `files(ids)` once, for exactly `ids`, with `found`.
fn expect_files(h: &mut Harness, ids: &[&str], found: Vec<FileInfo>) {
    let wanted: Vec<FileId> = ids.iter().map(|i| file_id(i)).collect();
    h.files
        .expect_files()
        .withf(move |asked| asked == wanted.as_slice())
        .times(1)
        .return_once(move |_| Ok(found));
}

/// Ann sends `text` carrying `ids` into c1 from ann-1.
async fn send_with(h: Harness, text: &str, ids: &[&str]) -> Result<Message, SendError> {
    h.build()
        .send(
            &caller("ann", "ann-1"),
            Draft {
                to: Recipient::Conversation(conv_id("c1")),
                body: MessageBody::caption(text).unwrap(),
                client_msg_id: None,
                attachments: ids.iter().map(|i| file_id(i)).collect(),
            },
        )
        .await
}

#[tokio::test]
async fn a_message_carries_the_senders_files_metadata_in_the_order_named() {
    let mut h = Harness::new();
    // The store answers in another order than asked.
    expect_files(
        &mut h,
        &["f2", "f1png", "f3"],
        vec![file("f3", "ann"), file("f1png", "ann"), file("f2", "ann")],
    );
    let expected = NewMessage {
        body: MessageBody::caption("").unwrap(),
        attachments: vec![
            Attachment::from(&file("f2", "ann")),
            Attachment::from(&file("f1png", "ann")),
            Attachment::from(&file("f3", "ann")),
        ],
        ..new_message("c1", "ann", "x", None)
    };
    assert!(expected.attachments[1].thumbnail && !expected.attachments[0].thumbnail);
    let stored = stored_from(&expected, 1);
    expect_append(
        &mut h,
        expected,
        Ok(AppendOutcome::Stored {
            message: stored.clone(),
            members: uids(&["ann", "bob"]),
        }),
    );
    h.expect_delivery(
        Delivery {
            users: uids(&["ann", "bob"]),
            except: Some(session("ann-1")),
        },
        Event::Message(stored.clone()),
    );
    let acked = send_with(h, "", &["f2", "f1png", "f3"]).await.unwrap();
    assert_eq!(acked, stored);
    assert_eq!(acked.attachments.len(), 3);
}

#[tokio::test]
async fn attaching_someone_elses_file_is_no_such_file_and_stores_nothing() {
    let mut h = Harness::new();
    expect_files(
        &mut h,
        &["f1", "f2"],
        vec![file("f1", "ann"), file("f2", "bob")],
    );
    h.messages.expect_append().never();
    h.messages.expect_append_all().never();
    h.expect_no_delivery();
    let err = send_with(h, "look", &["f1", "f2"]).await.unwrap_err();
    assert!(matches!(err, SendError::NoSuchFile), "{err:?}");
}

#[tokio::test]
async fn attaching_a_missing_file_is_no_such_file_and_stores_nothing() {
    let mut h = Harness::new();
    expect_files(&mut h, &["f1", "gone"], vec![file("f1", "ann")]);
    h.messages.expect_append().never();
    h.messages.expect_append_all().never();
    h.expect_no_delivery();
    let err = send_with(h, "look", &["f1", "gone"]).await.unwrap_err();
    assert!(matches!(err, SendError::NoSuchFile), "{err:?}");
}

#[tokio::test]
async fn a_message_without_attachments_asks_no_file_store() {
    let mut h = Harness::new();
    h.files.expect_files().never();
    let expected = new_message("c1", "ann", "hi", None);
    let stored = stored_from(&expected, 1);
    expect_append(
        &mut h,
        expected,
        Ok(AppendOutcome::Stored {
            message: stored,
            members: uids(&["ann"]),
        }),
    );
    h.transport.expect_deliver().return_const(());
    send_with(h, "hi", &[]).await.unwrap();
}

#[tokio::test]
async fn a_private_message_carries_attachments_into_the_direct_conversation() {
    let mut h = Harness::new();
    expect_recipient(&mut h, "bob", true);
    expect_direct(&mut h, "ann", "bob", "d1");
    expect_files(&mut h, &["f1"], vec![file("f1", "ann")]);
    let expected = NewMessage {
        attachments: vec![Attachment::from(&file("f1", "ann"))],
        ..new_message("d1", "ann", "for you", None)
    };
    let stored = stored_from(&expected, 1);
    expect_append(
        &mut h,
        expected,
        Ok(AppendOutcome::Stored {
            message: stored.clone(),
            members: uids(&["ann", "bob"]),
        }),
    );
    h.transport.expect_deliver().times(1).return_const(());
    let acked = h
        .build()
        .send(
            &caller("ann", "ann-1"),
            Draft {
                to: Recipient::User(uid("bob")),
                body: body("for you"),
                client_msg_id: None,
                attachments: vec![file_id("f1")],
            },
        )
        .await
        .unwrap();
    assert_eq!(acked.attachments, stored.attachments);
}
