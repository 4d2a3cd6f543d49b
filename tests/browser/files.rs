//! Files (issue 28): attached through the page's file input, uploaded with
//! tus, sent with a message and shown to the other side, an image as a
//! thumbnail that opens the full picture, another file as its name, its
//! size and a download; an upload whose connection drops goes on where it
//! stopped; a file over the limit says so beside it.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::TestServer;
use crate::setup;
use crate::ui::{BODIES, DESKTOP, Page, bob_wrote_to_ann};

/// The thumbnail in the open conversation.
const THUMB: &str = "document.querySelector('#messages .message .thumb img')";

/// Ann and Bob in their conversation, each in a browser of their own.
async fn ann_and_bob(server: &TestServer, driver: &crate::webdriver::Driver) -> (Page, Page) {
    let _ = bob_wrote_to_ann(server, &["Send me the picture?"]).await;
    let (ann, bob) = tokio::join!(
        Page::open(driver, server, DESKTOP),
        Page::open(driver, server, DESKTOP),
    );
    ann.log_in("ann").await;
    bob.log_in("bob").await;
    ann.open_conversation("bob").await;
    bob.open_conversation("ann").await;
    (ann, bob)
}

/// Attaches the file at `path` and waits until it is uploaded.
async fn attach(page: &Page, path: &Path) {
    let name = path.file_name().unwrap().to_str().unwrap();
    page.b.choose_file("#file-input", path).await;
    page.b
        .wait_for(
            &format!("{name} to be uploaded"),
            &format!(
                "Array.from(document.querySelectorAll('#attachments .pending-file'))\
                 .some(f => f.querySelector('.pending-name').textContent === {} && f.dataset.state === 'done')",
                json!(name)
            ),
        )
        .await;
}

/// GETs `url` with no token (a signed link needs none): status, type, bytes.
async fn get(server: &TestServer, url: &str) -> (u16, String, Vec<u8>) {
    let res = server
        .http()
        .get(url)
        .send()
        .await
        .expect("the server answers");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, res.bytes().await.unwrap().to_vec())
}

/// Waits for the thumbnail to have loaded; its natural and shown sizes.
async fn thumbnail_loaded(page: &Page) -> Value {
    page.b
        .wait_for(
            "the thumbnail to load",
            &format!("{THUMB}.complete && {THUMB}.naturalWidth > 0"),
        )
        .await;
    page.b
        .eval(
            &format!(
                "const i = {THUMB}; return [i.naturalWidth, i.naturalHeight, i.width, i.height]"
            ),
            json!([]),
        )
        .await
}

#[tokio::test]
async fn a_picture_shows_to_the_other_side_as_a_thumbnail_that_opens_it() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, bob) = ann_and_bob(&server, &driver).await;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("sunset.png");
    image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    })
    .save(&png)
    .unwrap();
    let bytes = std::fs::read(&png).unwrap();

    attach(&ann, &png).await;
    ann.send("Here it is").await;
    ann.b
        .wait_for(
            "the tray to empty once sent",
            "document.getElementById('attachments').hidden",
        )
        .await;
    ann.wait_for_bodies(&["Send me the picture?", "Here it is"])
        .await;

    // Bob sees it live: a thumbnail of the server's (320 px at most),
    // shown in a box of its shape.
    bob.wait_for_bodies(&["Send me the picture?", "Here it is"])
        .await;
    assert_eq!(thumbnail_loaded(&bob).await, json!([320, 240, 320, 240]));
    // A click opens the full picture, from a signed link that serves it.
    bob.b.click("#messages .message .thumb").await;
    let full = "document.getElementById('viewer-image')";
    let src = bob
        .b
        .wait_for(
            "the full picture to load",
            &format!("{full}.complete && {full}.naturalWidth === 640 && {full}.src"),
        )
        .await;
    let (status, content_type, served) = get(&server, src.as_str().unwrap()).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert!(served == bytes, "the link serves the picture sent");
    bob.b.click("#viewer-close").await;

    // After a reload it comes from history, and shows the same.
    bob.b.goto(&server.url("/")).await;
    bob.wait_ready().await;
    bob.open_conversation("ann").await;
    bob.wait_for_bodies(&["Send me the picture?", "Here it is"])
        .await;
    assert_eq!(thumbnail_loaded(&bob).await, json!([320, 240, 320, 240]));

    ann.b.quit().await;
    bob.b.quit().await;
}

#[tokio::test]
async fn another_file_shows_as_its_name_and_size_and_one_too_large_says_so() {
    let Some((server, driver)) = setup(&[("CONFAB_MAX_FILE_BYTES", "100000")]).await else {
        return;
    };
    let (ann, bob) = ann_and_bob(&server, &driver).await;
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let text = "minutes of the meeting\n".repeat(65);
    std::fs::write(&notes, &text).unwrap();
    assert_eq!(text.len(), 1495);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 200_000]).unwrap();

    // Over the server's limit: refused, and the server's words say why.
    ann.b.choose_file("#file-input", &big).await;
    ann.wait_for_text(
        "#attachments .pending-file[data-state='failed'] .pending-status",
        "larger than 100000 bytes",
    )
    .await;
    ann.send("").await;
    ann.wait_for_text("#send-error", "could not be uploaded")
        .await;
    ann.b
        .click("#attachments .pending-file[data-state='failed'] .remove")
        .await;

    // A file alone, no text: sent with the button.
    attach(&ann, &notes).await;
    ann.b
        .wait_for(
            "one file in the tray",
            "document.querySelectorAll('#attachments .pending-file').length === 1",
        )
        .await;
    ann.b.click("#send-button").await;

    let file = "#messages .message .file";
    bob.wait_for_text(&format!("{file} .file-name"), "notes.txt")
        .await;
    bob.wait_for_text(&format!("{file} .file-size"), "1.5 kB")
        .await;
    // No empty text above the file.
    assert_eq!(bob.bodies().await, vec!["Send me the picture?"]);
    let shown = bob
        .b
        .eval(&format!("return {BODIES}.length"), json!([]))
        .await;
    assert_eq!(shown, 1);

    // Its download is a signed link to the file, saved under its name.
    bob.b
        .eval(
            "HTMLAnchorElement.prototype.click = function () { \
               window.testDownload = [this.href, this.download]; }",
            json!([]),
        )
        .await;
    bob.b.click(file).await;
    let download = bob
        .b
        .wait_for("the download to start", "window.testDownload")
        .await;
    assert_eq!(download[1], "notes.txt");
    let (status, _, served) = get(&server, download[0].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(served == text.as_bytes(), "the link serves the file sent");

    ann.b.quit().await;
    bob.b.quit().await;
}

/// Makes the page's uploads drop their connection once, at the PATCH of
/// `offset`, as a network would (an `error` event, nothing sent), and
/// keeps a log of the tus requests in `window.tusLog`.
const DROP_ONCE: &str = r#"
    window.tusLog = [];
    const open = XMLHttpRequest.prototype.open;
    const setHeader = XMLHttpRequest.prototype.setRequestHeader;
    const send = XMLHttpRequest.prototype.send;
    let dropped = false;
    XMLHttpRequest.prototype.open = function (method, url) {
      this.testMethod = method;
      return open.apply(this, arguments);
    };
    XMLHttpRequest.prototype.setRequestHeader = function (name, value) {
      if (name === 'Upload-Offset') this.testOffset = Number(value);
      return setHeader.apply(this, arguments);
    };
    XMLHttpRequest.prototype.send = function () {
      const offset = this.testOffset;
      if (this.testMethod === 'PATCH' && offset === window.dropAt && !dropped) {
        dropped = true;
        window.tusLog.push(`PATCH ${offset} dropped`);
        setTimeout(() => this.dispatchEvent(new ProgressEvent('error')), 0);
        return undefined;
      }
      window.tusLog.push(this.testMethod === 'PATCH' ? `PATCH ${offset}` : this.testMethod);
      return send.apply(this, arguments);
    };
"#;

#[tokio::test]
async fn an_upload_goes_on_where_it_stopped_after_a_dropped_connection() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, bob) = ann_and_bob(&server, &driver).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.bin");
    // Two chunks and a bit: the second drops.
    let bytes: Vec<u8> = (0..9 * 1024 * 1024 + 100)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    const CHUNK: u64 = 4 * 1024 * 1024;

    ann.b
        .eval(&format!("window.dropAt = {CHUNK};"), json!([]))
        .await;
    ann.b.eval(DROP_ONCE, json!([])).await;
    attach(&ann, &path).await;
    let log = ann.b.eval("return window.tusLog", json!([])).await;
    assert_eq!(
        log,
        json!([
            "POST",
            "PATCH 0",
            format!("PATCH {CHUNK} dropped"),
            "HEAD",
            format!("PATCH {CHUNK}"),
            format!("PATCH {}", 2 * CHUNK),
        ])
    );
    ann.b.click("#send-button").await;

    let file = "#messages .message .file";
    bob.wait_for_text(&format!("{file} .file-name"), "recording.bin")
        .await;
    bob.b
        .eval(
            "HTMLAnchorElement.prototype.click = function () { window.testDownload = this.href; }",
            json!([]),
        )
        .await;
    bob.b.click(file).await;
    let url = bob
        .b
        .wait_for("the download to start", "window.testDownload")
        .await;
    let (status, _, served) = get(&server, url.as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(served == bytes, "the file is whole after the drop");

    ann.b.quit().await;
    bob.b.quit().await;
}

/// Holds every PATCH of the page's uploads (never sent, as on a stalled
/// network) and logs the other tus requests with their answers' status.
const HOLD_PATCHES: &str = r#"
    window.tusLog = [];
    const open = XMLHttpRequest.prototype.open;
    const send = XMLHttpRequest.prototype.send;
    XMLHttpRequest.prototype.open = function (method) {
      this.testMethod = method;
      return open.apply(this, arguments);
    };
    XMLHttpRequest.prototype.send = function () {
      if (this.testMethod === 'PATCH') {
        window.tusLog.push('PATCH held');
        return undefined;
      }
      this.addEventListener('loadend', () => window.tusLog.push(`${this.testMethod} ${this.status}`));
      return send.apply(this, arguments);
    };
"#;

#[tokio::test]
async fn send_waits_for_uploads_and_cancelling_one_ends_it_on_the_server() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, bob) = ann_and_bob(&server, &driver).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.bin");
    std::fs::write(&path, vec![1u8; 50_000]).unwrap();

    ann.b.eval(HOLD_PATCHES, json!([])).await;
    ann.b.choose_file("#file-input", &path).await;
    ann.b
        .wait_for(
            "the upload to be under way",
            "window.tusLog.includes('PATCH held')",
        )
        .await;
    let disabled = "document.getElementById('send-button').disabled";
    assert_eq!(
        ann.b.eval(&format!("return {disabled}"), json!([])).await,
        true
    );
    ann.wait_for_text("#attachments .pending-file .remove", "Cancel")
        .await;
    ann.b.click("#attachments .pending-file .remove").await;
    ann.b
        .wait_for(
            "the server to forget the upload",
            "window.tusLog.includes('DELETE 204')",
        )
        .await;
    // (A status is logged once its request has ended, after the next
    // request may have started.)
    let mut log: Vec<String> =
        serde_json::from_value(ann.b.eval("return window.tusLog", json!([])).await).unwrap();
    assert_eq!(log.pop().as_deref(), Some("DELETE 204"));
    log.sort();
    assert_eq!(log, ["PATCH held", "POST 201"]);
    ann.b
        .wait_for(
            "the tray to empty and Send to be back",
            &format!("document.getElementById('attachments').hidden && !{disabled}"),
        )
        .await;

    ann.b.quit().await;
    bob.b.quit().await;
}

#[tokio::test]
async fn files_dropped_on_the_conversation_or_pasted_in_the_box_are_attached() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, bob) = ann_and_bob(&server, &driver).await;
    // What the browser does for a file dragged from the desktop and for an
    // image pasted from the clipboard: the same events, with the files in
    // their DataTransfer.
    ann.b
        .eval(
            "const files = (name, type) => { const d = new DataTransfer(); \
               d.items.add(new File(['some bytes of ' + name], name, { type })); return d; }; \
             const pane = document.getElementById('conversation'); \
             const dropped = files('dropped.txt', 'text/plain'); \
             pane.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dropped, bubbles: true, cancelable: true })); \
             pane.dispatchEvent(new DragEvent('drop', { dataTransfer: dropped, bubbles: true, cancelable: true })); \
             document.getElementById('message-input').dispatchEvent(new ClipboardEvent('paste', \
               { clipboardData: files('image.png', 'image/png'), bubbles: true, cancelable: true }));",
            json!([]),
        )
        .await;
    let names = ann
        .b
        .wait_for(
            "both files to be uploaded",
            "(() => { const rows = Array.from(document.querySelectorAll('#attachments .pending-file')); \
               return rows.length === 2 && rows.every(r => r.dataset.state === 'done') \
               && rows.map(r => r.querySelector('.pending-name').textContent); })()",
        )
        .await;
    assert_eq!(names[0], "dropped.txt");
    let pasted = names[1].as_str().unwrap();
    assert!(
        pasted.starts_with("Pasted image ") && pasted.ends_with(".png"),
        "{pasted}"
    );
    ann.send("Two files").await;
    bob.wait_for_text("#messages .message .file-name", "dropped.txt")
        .await;
    bob.b
        .wait_for(
            "two files in the message",
            "document.querySelectorAll('#messages .message .file').length === 2",
        )
        .await;

    ann.b.quit().await;
    bob.b.quit().await;
}
