//! Uploads against the release binary, as Rocket.Chat's mobile app and bots send them:
//! `rooms.upload`, `rooms.media` + `rooms.mediaConfirm`, reading `/file-upload/...` with
//! `rc_uid` / `rc_token`, the `*.files` lists and `users.setAvatar`; every refusal the issue
//! names (too large, lying type, SVG, decompression bomb, a path in the name, a room the
//! user cannot post in, a body that breaks off), and the S3 backend against moto's server.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{rest_call as call, sign_in, sign_up, url, Auth, Binary};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;

const ADMIN: (&str, &str) = ("boss", "s3cret-pass");

fn start(more: &[(&str, &str)]) -> Binary {
    let mut envs = vec![
        ("ADMIN_USERNAME", ADMIN.0),
        ("ADMIN_PASS", ADMIN.1),
        ("ADMIN_EMAIL", "boss@example.com"),
        ("OVERWRITE_SETTING_API_Enable_Rate_Limiter", "false"),
    ];
    envs.extend_from_slice(more);
    Binary::start("", &envs)
}

/// A multipart form: text fields and one file part.
fn form(fields: &[(&str, &str)], file: Option<(&str, &str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----comet-test-boundary-7c1f";
    let mut out = Vec::new();
    if let Some((field, name, kind, bytes)) = file {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: {kind}\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    for (k, v) in fields {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

async fn upload(
    addr: SocketAddr,
    path: &str,
    auth: &Auth,
    fields: &[(&str, &str)],
    file: Option<(&str, &str, &str, &[u8])>,
) -> (u16, Json) {
    let (content_type, body) = form(fields, file);
    let resp = reqwest::Client::new()
        .post(url(addr, path))
        .header("X-User-Id", &auth.0)
        .header("X-Auth-Token", &auth.1)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

/// A GET of a file: status, headers, bytes.
async fn fetch(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.get(url(addr, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn with_token(path: &str, auth: &Auth) -> String {
    format!("{path}?rc_uid={}&rc_token={}", auth.0, auth.1)
}

/// A JPEG of `w`×`h` carrying an EXIF block with a location.
fn photo(w: u32, h: u32) -> Vec<u8> {
    let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    }));
    let mut plain = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut plain),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let mut app1 = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\0\0\0\0\0".to_vec();
    app1.extend_from_slice(b"GPSLatitude 48.8584N GPSLongitude 2.2945E");
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

/// PNG's chunk checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("uploads")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn a_photo_goes_up_in_one_step_and_only_members_read_it_without_its_location() {
    let comet = start(&[]);
    let addr = comet.addr;
    let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let stranger = sign_up(addr, "stranger").await;
    let (status, created) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/groups.create",
        Some(&boss),
        Some(json!({"name": "secret-room"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let rid = created["group"]["_id"].as_str().unwrap().to_owned();

    let jpeg = photo(1200, 800);
    assert!(contains(&jpeg, b"GPSLatitude"));
    let (status, sent) = upload(
        addr,
        &format!("/api/v1/rooms.upload/{rid}"),
        &boss,
        &[("msg", "our trip"), ("description", "the tower")],
        Some(("file", "../../trip.jpg", "image/jpeg", &jpeg)),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    let message = &sent["message"];
    assert_eq!(message["msg"], "our trip");
    assert_eq!(
        message["file"]["name"], "trip.jpg",
        "no path in the name: {message}"
    );
    assert_eq!(message["file"]["type"], "image/jpeg");
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["type"], "file");
    assert_eq!(attachment["description"], "the tower");
    assert_eq!(attachment["title"], "trip.jpg");
    let file_id = message["file"]["_id"].as_str().unwrap().to_owned();
    assert_eq!(
        attachment["title_link"],
        format!("/file-upload/{file_id}/trip.jpg")
    );
    // The thumbnail stands for the picture in the message: 480 wide at most.
    assert_eq!(
        attachment["image_dimensions"],
        json!({"width": 480, "height": 320})
    );
    assert!(
        attachment["image_preview"]
            .as_str()
            .is_some_and(|p| p.len() > 20),
        "{attachment}"
    );
    let files = message["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "the file and its thumbnail: {message}");
    assert_eq!(files[1]["typeGroup"], "thumb");
    let thumb_url = attachment["image_url"].as_str().unwrap().to_owned();
    assert!(thumb_url.starts_with(&format!(
        "/file-upload/{}/",
        files[1]["_id"].as_str().unwrap()
    )));

    let path = format!("/file-upload/{file_id}/trip.jpg");
    let (status, headers, bytes) = fetch(addr, &with_token(&path, &boss), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("inline;"));
    assert!(!contains(&bytes, b"GPSLatitude"), "the location is gone");
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 1200);
    let etag = headers["etag"].to_str().unwrap().to_owned();

    // Credentials in cookies or headers serve too; an unchanged file is not sent again.
    let cookie = format!("rc_uid={}; rc_token={}", boss.0, boss.1);
    let (status, _, again) = fetch(addr, &path, &[("Cookie", &cookie)]).await;
    assert_eq!((status, again.len()), (200, bytes.len()));
    let (status, _, none) = fetch(
        addr,
        &path,
        &[
            ("X-User-Id", &boss.0),
            ("X-Auth-Token", &boss.1),
            ("If-None-Match", &etag),
        ],
    )
    .await;
    assert_eq!((status, none.len()), (304, 0));
    // A range, so audio and video seek.
    let (status, headers, part) = fetch(
        addr,
        &with_token(&path, &boss),
        &[("Range", "bytes=100-199")],
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(part, bytes[100..200].to_vec());
    assert_eq!(
        headers["content-range"],
        format!("bytes 100-199/{}", bytes.len())
    );
    let (status, _, _) = fetch(
        addr,
        &with_token(&path, &boss),
        &[("Range", "bytes=99999999-")],
    )
    .await;
    assert_eq!(status, 416);
    let (status, _, thumb) = fetch(addr, &with_token(&thumb_url, &boss), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(image::load_from_memory(&thumb).unwrap().width(), 480);

    // A stranger and an anonymous reader get nothing, with or without the right id.
    for target in [path.as_str(), "/file-upload/notAnUploadId/x.jpg"] {
        let (status, _, body) = fetch(addr, &with_token(target, &stranger), &[]).await;
        assert_eq!(status, 403, "{target}");
        assert!(!contains(&body, &bytes[..64]));
        let (status, _, _) = fetch(addr, target, &[]).await;
        assert_eq!(status, 401, "{target}");
        let (status, _, _) = fetch(
            addr,
            &format!("{target}?rc_uid={}&rc_token=forged", boss.0),
            &[],
        )
        .await;
        assert_eq!(status, 401, "{target}");
    }
    let (status, listed) = call(
        addr,
        reqwest::Method::GET,
        &format!("/api/v1/groups.files?roomId={rid}"),
        Some(&stranger),
        None,
    )
    .await;
    assert_ne!(status, 200, "{listed}");
    assert!(!listed.to_string().contains(&file_id));

    // The list has the picture, without its thumbnail, with who sent it.
    let (status, listed) = call(
        addr,
        reqwest::Method::GET,
        &format!("/api/v1/groups.files?roomId={rid}"),
        Some(&boss),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["files"][0]["_id"], file_id.as_str());
    assert_eq!(listed["files"][0]["user"]["username"], "boss");
    assert_eq!(listed["files"][0]["url"], path.as_str());

    // The log never holds a reader's token.
    let log = comet.stop();
    assert!(
        !log.iter().any(|l| l.contains(&boss.1)),
        "a token reached the log"
    );
}

#[tokio::test]
async fn the_mobile_apps_two_steps_confirm_a_file_into_a_thread_and_delete_takes_it_away() {
    let comet = start(&[]);
    let addr = comet.addr;
    let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let bob = sign_up(addr, "bob").await;
    let (_, parent) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/chat.postMessage",
        Some(&boss),
        Some(json!({"roomId": "GENERAL", "text": "thread start"})),
    )
    .await;
    let tmid = parent["message"]["_id"].as_str().unwrap().to_owned();

    let report = b"%PDF-1.7\n% a report\n".repeat(2000);
    let (status, media) = upload(
        addr,
        "/api/v1/rooms.media/GENERAL",
        &bob,
        &[],
        Some(("file", "report.pdf", "application/pdf", &report)),
    )
    .await;
    assert_eq!(status, 200, "{media}");
    let file_id = media["file"]["_id"].as_str().unwrap().to_owned();
    assert_eq!(
        media["file"]["url"],
        format!("/file-upload/{file_id}/report.pdf")
    );
    // Not confirmed yet: not in the room's files.
    let (_, listed) = call(
        addr,
        reqwest::Method::GET,
        "/api/v1/channels.files?roomId=GENERAL",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(listed["total"], 0, "{listed}");
    // Someone else cannot confirm it.
    let (status, _) = call(
        addr,
        reqwest::Method::POST,
        &format!("/api/v1/rooms.mediaConfirm/GENERAL/{file_id}"),
        Some(&boss),
        Some(json!({"msg": "mine now"})),
    )
    .await;
    assert_eq!(status, 400);

    let (status, confirmed) = call(
        addr,
        reqwest::Method::POST,
        &format!("/api/v1/rooms.mediaConfirm/GENERAL/{file_id}"),
        Some(&bob),
        Some(json!({"msg": "the numbers", "description": "Q3", "tmid": tmid})),
    )
    .await;
    assert_eq!(status, 200, "{confirmed}");
    let message = &confirmed["message"];
    assert_eq!(message["tmid"], tmid.as_str());
    assert_eq!(message["file"]["type"], "application/pdf");
    assert_eq!(message["attachments"][0]["format"], "pdf");
    assert_eq!(message["attachments"][0]["size"], report.len());
    assert_eq!(message["attachments"][0]["description"], "Q3");
    let (_, listed) = call(
        addr,
        reqwest::Method::GET,
        "/api/v1/channels.files?roomId=GENERAL&typeGroup=application&name=REPORT",
        Some(&boss),
        None,
    )
    .await;
    assert_eq!(listed["total"], 1, "{listed}");
    let (_, listed) = call(
        addr,
        reqwest::Method::GET,
        "/api/v1/channels.files?roomId=GENERAL&typeGroup=image",
        Some(&boss),
        None,
    )
    .await;
    assert_eq!(listed["total"], 0, "{listed}");

    // DDP's sendFileMessage sends the message of a file received over rooms.media.
    let (status, media) = upload(
        addr,
        "/api/v1/rooms.media/GENERAL",
        &bob,
        &[],
        Some(("file", "notes.txt", "text/plain", b"plain notes")),
    )
    .await;
    assert_eq!(status, 200, "{media}");
    let other = media["file"]["_id"].as_str().unwrap();
    let ddp_call = json!({"msg": "method", "id": "1", "method": "sendFileMessage",
        "params": ["GENERAL", null, {"_id": other, "description": "notes"}, {"msg": "over DDP"}]});
    let (status, answer) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/method.call/sendFileMessage",
        Some(&bob),
        Some(json!({"message": ddp_call.to_string()})),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Json = serde_json::from_str(answer["message"].as_str().unwrap()).unwrap();
    assert_eq!(answer["result"]["msg"], "over DDP", "{answer}");
    assert_eq!(answer["result"]["file"]["_id"], other);
    assert_eq!(answer["result"]["attachments"][0]["description"], "notes");
    let (_, listed) = call(
        addr,
        reqwest::Method::GET,
        "/api/v1/channels.files?roomId=GENERAL",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(listed["total"], 2, "{listed}");
    let (_, sent) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/chat.delete",
        Some(&bob),
        Some(json!({"roomId": "GENERAL", "msgId": answer["result"]["_id"]})),
    )
    .await;
    assert_eq!(sent["success"], true);

    let path = format!("/file-upload/{file_id}/report.pdf");
    let (status, _, bytes) = fetch(addr, &with_token(&path, &boss), &[]).await;
    assert_eq!((status, bytes.len()), (200, report.len()));
    assert_eq!(files_in(comet.data_dir()), 1);

    // Deleting the message takes the file with it.
    let (status, deleted) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/chat.delete",
        Some(&bob),
        Some(json!({"roomId": "GENERAL", "msgId": message["_id"]})),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    let (status, _, _) = fetch(addr, &with_token(&path, &boss), &[]).await;
    assert_eq!(status, 403);
    assert_eq!(
        files_in(comet.data_dir()),
        0,
        "the bytes are gone from disk"
    );
    comet.stop();
}

#[tokio::test]
async fn bad_uploads_are_refused_with_a_clear_error_and_leave_nothing_behind() {
    let comet = start(&[("OVERWRITE_SETTING_FileUpload_MaxFileSize", "200000")]);
    let addr = comet.addr;
    let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let bob = sign_up(addr, "bob").await;
    let room = "/api/v1/rooms.upload/GENERAL";

    // Over the limit: 413 and nothing kept.
    let big = vec![7u8; 300_000];
    let (status, body) = upload(
        addr,
        room,
        &bob,
        &[],
        Some(("file", "big.bin", "application/octet-stream", &big)),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["errorType"], "error-file-too-large");

    // An SVG (it can carry script) is refused, whatever it claims to be.
    let svg =
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(document.cookie)</script></svg>";
    for claimed in ["image/svg+xml", "image/png"] {
        let (status, body) = upload(
            addr,
            room,
            &bob,
            &[],
            Some(("file", "cat.png", claimed, svg)),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errorType"], "error-invalid-file-type");
    }

    // A decompression bomb: a PNG header claiming 100,000 × 100,000 pixels.
    let mut bomb = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    bomb.extend_from_slice(b"IHDR");
    bomb.extend_from_slice(&100_000u32.to_be_bytes());
    bomb.extend_from_slice(&100_000u32.to_be_bytes());
    bomb.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&bomb[12..]);
    bomb.extend_from_slice(&crc.to_be_bytes());
    bomb.extend_from_slice(&[0, 0, 0, 12]);
    let idat = b"IDAT\x78\x01\x01\x01\x00\xfe\xff\x00\x00\x01\x00\x01";
    bomb.extend_from_slice(idat);
    bomb.extend_from_slice(&crc32(idat).to_be_bytes());
    let (status, body) = upload(
        addr,
        room,
        &bob,
        &[],
        Some(("file", "bomb.png", "image/png", &bomb)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorType"], "error-image-too-large");

    // A lying type: HTML sent as a PNG is stored and served as what it is, to download,
    // in a sandbox.
    let html = b"<html><body><script>fetch('/api/v1/me')</script></body></html>";
    let (status, body) = upload(
        addr,
        room,
        &bob,
        &[],
        Some(("file", "innocent.png", "image/png", html)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["file"]["type"], "text/html");
    assert!(body["message"]["attachments"][0].get("image_url").is_none());
    let id = body["message"]["file"]["_id"].as_str().unwrap();
    let (status, headers, _) = fetch(
        addr,
        &with_token(&format!("/file-upload/{id}/innocent.png"), &boss),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));

    // A room the user cannot post in: a private group they are not in, a read-only room.
    let (_, group) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/groups.create",
        Some(&boss),
        Some(json!({"name": "inner"})),
    )
    .await;
    let gid = group["group"]["_id"].as_str().unwrap();
    let (status, body) = upload(
        addr,
        &format!("/api/v1/rooms.upload/{gid}"),
        &bob,
        &[],
        Some(("file", "a.txt", "text/plain", b"hello")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (_, ro) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/channels.create",
        Some(&boss),
        Some(json!({"name": "announcements", "readOnly": true, "members": ["bob"]})),
    )
    .await;
    let roid = ro["channel"]["_id"].as_str().unwrap();
    let (status, body) = upload(
        addr,
        &format!("/api/v1/rooms.upload/{roid}"),
        &bob,
        &[],
        Some(("file", "a.txt", "text/plain", b"hello")),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorType"], "error-room-readonly");
    // No file at all; not a form.
    let (status, body) = upload(addr, room, &bob, &[("msg", "no file")], None).await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("error-no-file-uploaded"))
    );
    let (status, _) = call(
        addr,
        reqwest::Method::POST,
        room,
        Some(&bob),
        Some(json!({"file": "x"})),
    )
    .await;
    assert_eq!(status, 400);

    // An upload that breaks off midway: nothing stored, no record.
    let before = files_in(comet.data_dir());
    {
        use tokio::io::AsyncWriteExt as _;
        let (content_type, body) = form(
            &[],
            Some((
                "file",
                "cut.bin",
                "application/octet-stream",
                &[1u8; 150_000],
            )),
        );
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {room} HTTP/1.1\r\nHost: t\r\nX-User-Id: {}\r\nX-Auth-Token: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            bob.0,
            bob.1,
            body.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&body[..100_000]).await.unwrap();
        socket.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        files_in(comet.data_dir()),
        before,
        "an interrupted upload leaves no bytes"
    );
    let (_, listed) = call(
        addr,
        reqwest::Method::GET,
        "/api/v1/channels.files?roomId=GENERAL",
        Some(&boss),
        None,
    )
    .await;
    assert_eq!(listed["total"], 1, "only the HTML file is listed: {listed}");
    comet.stop();
}

#[tokio::test]
async fn an_avatar_upload_is_served_at_the_users_avatar_address() {
    let comet = start(&[]);
    let addr = comet.addr;
    let bob = sign_up(addr, "bob").await;
    let jpeg = photo(64, 64);
    let (status, body) = upload(
        addr,
        "/api/v1/users.setAvatar",
        &bob,
        &[],
        Some(("image", "me.jpg", "image/jpeg", &jpeg)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, bytes) = fetch(addr, "/avatar/bob", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert!(
        !contains(&bytes, b"GPSLatitude"),
        "the avatar lost its location too"
    );
    // Another user's avatar needs the permission.
    let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let _ = boss;
    let (status, _) = upload(
        addr,
        "/api/v1/users.setAvatar",
        &bob,
        &[("username", "boss")],
        Some(("image", "x.jpg", "image/jpeg", &jpeg)),
    )
    .await;
    assert_eq!(status, 403);
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
    let (status, _) = upload(
        addr,
        "/api/v1/users.setAvatar",
        &bob,
        &[],
        Some(("image", "x.svg", "image/svg+xml", svg)),
    )
    .await;
    assert_eq!(status, 400);

    // A URL is fetched only from a public address: never this host or its network.
    for target in [
        format!("http://{addr}/avatar/boss"),
        format!("http://localhost:{}/avatar/boss", addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let (status, body) = call(
            addr,
            reqwest::Method::POST,
            "/api/v1/users.setAvatar",
            Some(&bob),
            Some(json!({"avatarUrl": target})),
        )
        .await;
        assert_eq!(
            (status, body["errorType"].as_str()),
            (400, Some("error-avatar-invalid-url")),
            "{target}: {body}"
        );
    }
    let (status, _, still) = fetch(addr, "/avatar/bob", &[]).await;
    assert_eq!((status, still), (200, bytes));

    // A room's avatar: from saveRoomSettings' data URI, served at /avatar/room/<rid>.
    use base64::Engine as _;
    let png = {
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::new(8, 8))
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let message = json!({"msg": "method", "id": "1", "method": "saveRoomSettings", "params": ["GENERAL", {"roomAvatar": uri}]});
    let body = json!({"message": message.to_string()});
    let (status, answer) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/method.call/saveRoomSettings",
        Some(&bob),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        answer["message"].as_str().unwrap().contains("error"),
        "bob may not edit #general: {answer}"
    );
    let (status, headers, _) = fetch(addr, "/avatar/room/GENERAL", &[]).await;
    assert_eq!(
        (status, headers["content-type"].to_str().unwrap()),
        (200, "image/svg+xml")
    );
    let (status, answer) = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/method.call/saveRoomSettings",
        Some(&boss),
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !answer["message"].as_str().unwrap().contains("\"error\""),
        "{answer}"
    );
    let (status, headers, served) = fetch(addr, "/avatar/room/GENERAL", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(served, png);
    comet.stop();
}

#[tokio::test]
async fn with_the_s3_backend_files_go_to_the_bucket_and_are_proxied_or_redirected() {
    let (_moto, endpoint) = common::s3::server("comet-uploads").await;
    for proxy in ["true", "false"] {
        let comet = start(&[
            ("OVERWRITE_SETTING_FileUpload_Storage_Type", "AmazonS3"),
            ("OVERWRITE_SETTING_FileUpload_S3_Bucket", "comet-uploads"),
            ("OVERWRITE_SETTING_FileUpload_S3_BucketURL", &endpoint),
            ("OVERWRITE_SETTING_FileUpload_S3_ForcePathStyle", "true"),
            ("OVERWRITE_SETTING_FileUpload_S3_AWSAccessKeyId", "key"),
            (
                "OVERWRITE_SETTING_FileUpload_S3_AWSSecretAccessKey",
                "secret",
            ),
            ("OVERWRITE_SETTING_FileUpload_S3_Proxy_Uploads", proxy),
        ]);
        let addr = comet.addr;
        let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
        let data: Vec<u8> = (0..7_000_000u32).map(|i| (i % 253) as u8).collect();
        let (status, sent) = upload(
            addr,
            "/api/v1/rooms.upload/GENERAL",
            &boss,
            &[],
            Some(("file", "data.bin", "application/octet-stream", &data)),
        )
        .await;
        assert_eq!(status, 200, "{sent}");
        let id = sent["message"]["file"]["_id"].as_str().unwrap();
        assert_eq!(files_in(comet.data_dir()), 0, "nothing on local disk");
        let path = with_token(&format!("/file-upload/{id}/data.bin"), &boss);
        let (status, headers, bytes) =
            fetch(addr, &path, &[("Range", "bytes=6000000-6000099")]).await;
        if proxy == "true" {
            assert_eq!(status, 206);
            assert_eq!(bytes, data[6_000_000..6_000_100].to_vec());
        } else {
            assert_eq!(status, 302);
            let location = headers["location"].to_str().unwrap();
            assert!(
                location.starts_with(&endpoint) && location.contains("X-Amz-Signature"),
                "{location}"
            );
            let direct = reqwest::get(location).await.unwrap().bytes().await.unwrap();
            assert!(direct.to_vec() == data, "the signed link reads the object");
        }
        // A stranger is refused before any link is made.
        let eve = sign_up(addr, "eve").await;
        let (_, group) = call(
            addr,
            reqwest::Method::POST,
            "/api/v1/groups.create",
            Some(&boss),
            Some(json!({"name": format!("g{proxy}")})),
        )
        .await;
        let gid = group["group"]["_id"].as_str().unwrap();
        let (_, sent) = upload(
            addr,
            &format!("/api/v1/rooms.upload/{gid}"),
            &boss,
            &[],
            Some(("file", "s.txt", "text/plain", b"private")),
        )
        .await;
        let sid = sent["message"]["file"]["_id"].as_str().unwrap();
        let (status, headers, _) = fetch(
            addr,
            &with_token(&format!("/file-upload/{sid}/s.txt"), &eve),
            &[],
        )
        .await;
        assert_eq!(status, 403);
        assert!(headers.get("location").is_none());
        comet.stop();
    }
}

#[tokio::test]
async fn an_unconfirmed_upload_goes_when_its_day_is_over_and_a_confirmed_one_stays() {
    let server = common::spawn_with_admin().await;
    let addr = server.addr;
    let boss = common::rest_login(&server, common::ADMIN.0, common::ADMIN.1).await;
    let (status, kept) = upload(
        addr,
        "/api/v1/rooms.media/GENERAL",
        &boss,
        &[],
        Some(("file", "kept.txt", "text/plain", b"kept")),
    )
    .await;
    assert_eq!(status, 200, "{kept}");
    let kept_id = kept["file"]["_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        addr,
        reqwest::Method::POST,
        &format!("/api/v1/rooms.mediaConfirm/GENERAL/{kept_id}"),
        Some(&boss),
        Some(json!({"msg": "kept"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, left) = upload(
        addr,
        "/api/v1/rooms.media/GENERAL",
        &boss,
        &[],
        Some(("file", "left.txt", "text/plain", b"left behind")),
    )
    .await;
    let left_id = left["file"]["_id"].as_str().unwrap().to_owned();

    // Within its day nothing goes; a day and an hour later the unconfirmed one does.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    server.uploads.remove_expired(now).await;
    let (status, _, _) = fetch(
        addr,
        &with_token(&format!("/file-upload/{left_id}/left.txt"), &boss),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    server
        .uploads
        .remove_expired(now + 25.0 * 3600.0 * 1000.0)
        .await;
    let (status, _, _) = fetch(
        addr,
        &with_token(&format!("/file-upload/{left_id}/left.txt"), &boss),
        &[],
    )
    .await;
    assert_eq!(status, 403, "the unconfirmed upload is gone");
    let (status, _, body) = fetch(
        addr,
        &with_token(&format!("/file-upload/{kept_id}/kept.txt"), &boss),
        &[],
    )
    .await;
    assert_eq!((status, body), (200, b"kept".to_vec()));
    server.shutdown().await;
}
