//! A real Synapse homeserver for the Matrix tests, and the "real user" side
//! of Matrix: [`switchboard_matrix::synapse`] (feature `synapse`), re-exported
//! here, and its smoke test. Nothing about Matrix is mocked.

use std::time::{Duration, Instant};

pub use switchboard_matrix::synapse::*;

use crate::harness::free_port;

/// A 2x2 red PNG.
const PNG: &str = "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73\
0000001649444154789c633c21a7c1c0c0c0c4c0c0c0c0c000000d720112397285f20000000049454e44ae426082";

#[tokio::test]
async fn synapse_two_real_users_talk() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("sb-registration.yaml");
    // The appservice's url is a closed port: Synapse retries its pushes in
    // the background, which must not disturb anything else.
    write_registration(
        &reg,
        "switchboard",
        &format!("http://127.0.0.1:{}", free_port()),
        "as-token-smoke",
        "hs-token-smoke",
        "sb_bot",
        "@sb_.*:localhost",
    );
    let mut hs = Synapse::start(&tmp.path().join("synapse"), &[reg]).await;
    let first_start = hs.start_time;

    let alice = hs.register("alice", true).await;
    let bob = hs.register("bob", false).await;
    assert_eq!(alice.user_id, "@alice:localhost");
    assert_eq!(bob.whoami().await, "@bob:localhost");

    let room = alice
        .create_room(Some("smoke"), &[&bob.user_id], None)
        .await;
    assert_eq!(bob.join("#smoke:localhost").await, room);
    assert_eq!(
        alice.members(&room).await,
        vec!["@alice:localhost", "@bob:localhost"]
    );

    let html = alice
        .send_html(&room, "hello *bob*", "hello <em>bob</em>")
        .await;
    let png = hex::decode(PNG).unwrap();
    let mxc = alice.upload(&png, "image/png", Some("red.png")).await;
    assert!(mxc.starts_with("mxc://localhost/"), "{mxc}");
    let image = alice
        .send_media(&room, "m.image", "red.png", &mxc, "image/png", png.len())
        .await;

    let got = bob
        .wait_for(&room, "alice's HTML message", |e| e["event_id"] == html)
        .await;
    assert_eq!(got["content"]["formatted_body"], "hello <em>bob</em>");
    assert_eq!(got["sender"], "@alice:localhost");
    let got = bob
        .wait_for(&room, "alice's image", |e| e["event_id"] == image)
        .await;
    assert_eq!(got["content"]["msgtype"], "m.image");
    let (ctype, bytes) = bob
        .download_typed(got["content"]["url"].as_str().unwrap())
        .await;
    assert_eq!(bytes, png);
    assert_eq!(ctype, "image/png");

    // Relations, as the real user side will send them.
    let reply = bob.reply(&room, &html, "hi alice").await;
    let edit = bob.edit(&room, &reply, "hi Alice").await;
    let reaction = alice.react(&room, &reply, "👍").await;
    let gone = alice.send_text(&room, "oops").await;
    alice.redact(&room, &gone, Some("typo")).await;
    let e = alice
        .wait_for(&room, "bob's edit", |e| e["event_id"] == edit)
        .await;
    assert_eq!(e["content"]["m.relates_to"]["event_id"], reply.as_str());
    let e = bob
        .wait_for(&room, "alice's reaction", |e| e["event_id"] == reaction)
        .await;
    assert_eq!(e["content"]["m.relates_to"]["key"], "👍");
    let e = bob.event(&room, &gone).await;
    assert!(
        e["content"].as_object().unwrap().is_empty(),
        "redacted: {e}"
    );

    // The appservice: its sender answers to the as_token, and it may
    // register and act as users of its exclusive namespace.
    let bot = hs.appservice("as-token-smoke", None);
    assert_eq!(bot.whoami().await, "@sb_bot:localhost");
    let ghost = hs.appservice_register("as-token-smoke", "sb_ghost").await;
    assert_eq!(ghost.whoami().await, "@sb_ghost:localhost");
    alice.invite(&room, "@sb_ghost:localhost").await;
    ghost.join(&room).await;
    let from_ghost = ghost.send_text(&room, "from the bridge").await;
    bob.wait_for(&room, "the ghost's message", |e| {
        e["event_id"] == from_ghost && e["sender"] == "@sb_ghost:localhost"
    })
    .await;

    // Down and back: same port, same data.
    let t = Instant::now();
    hs.stop().await;
    let stop_time = t.elapsed();
    let down = reqwest::get(format!("{}/_matrix/client/versions", hs.url())).await;
    assert!(down.is_err(), "Synapse still answers after stop()");
    hs.start_again().await;
    let restart = hs.start_time;
    let history = bob.messages(&room).await;
    assert!(history.iter().any(|e| e["event_id"] == html));
    assert!(history.iter().any(|e| e["event_id"] == image));
    assert_eq!(bob.download(&mxc).await, png);

    // A paused server hangs; resumed, it answers again.
    hs.pause();
    let hung = tokio::time::timeout(Duration::from_millis(500), bob.whoami()).await;
    assert!(hung.is_err(), "a paused Synapse answered");
    hs.resume();
    assert_eq!(bob.whoami().await, "@bob:localhost");

    eprintln!(
        "synapse: first start {first_start:?}, stop {stop_time:?}, start again {restart:?}, \
         whole test {:?}",
        t0.elapsed()
    );
}
