//! Edits, deletes and reactions keep pointing at the right message across
//! a kill -9, because the message map is in the database.

use serde_json::{json, Value};

use crate::harness::*;

on_both_backends!(edits_deletes_and_reactions_survive_a_restart => |backend| references(backend));

async fn references(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &token("bob", r#"["read", "write"]"#, r#"["g"]"#)
        + &webhook("hook", hook.port, r#"["g"]"#)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let (_, posted) = post_native(&client, &sb.api, "ann", "g", json!({"text": "frist"}), None)
        .await
        .unwrap();
    let id = posted["id"].as_str().unwrap().to_owned();
    eventually("the message at the webhook", || {
        hook.deliveries().len() == 1
    })
    .await;
    let original_delivery = hook.deliveries()[0].delivery_id.clone();
    // The receiver records a delivery just before it answers: let the row be
    // marked sent before the kill, or the restart would rightly resend it.
    sb.drained().await;

    sb.kill9();
    sb.restart().await;

    let auth = |who: &str| bearer(who);
    let url = format!("{}/v1/gateways/g/messages/{id}", sb.api);
    // bob may react but not edit or delete ann's message.
    let r = client
        .patch(&url)
        .header("authorization", auth("bob"))
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .delete(&url)
        .header("authorization", auth("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(format!("{url}/reactions"))
        .header("authorization", auth("bob"))
        .json(&json!({"emoji": "👍"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Only bob may take his reaction back: ann's attempt is refused and
    // reaches nobody (the webhook's count below stays the same).
    let r = client
        .post(format!("{url}/reactions"))
        .header("authorization", auth("ann"))
        .json(&json!({"emoji": "👍", "removed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has not reacted"),
        "{body}"
    );
    let r = client
        .patch(&url)
        .header("authorization", auth("ann"))
        .json(&json!({"text": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, reply) = post_native(
        &client,
        &sb.api,
        "bob",
        "g",
        json!({"text": "welcome", "reply_to": id}),
        None,
    )
    .await
    .unwrap();
    assert!(reply["id"].is_string());
    let r = client
        .delete(&url)
        .header("authorization", auth("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    eventually("all operations at the webhook", || {
        hook.deliveries().len() == 5
    })
    .await;
    let got: Vec<Value> = hook.deliveries().iter().map(|d| d.body.clone()).collect();
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message", "reaction", "edit", "message", "delete"]);
    assert_eq!(got[1]["emoji"], "👍");
    assert_eq!(got[2]["text"], "first");
    assert_eq!(got[3]["reply_to"], json!(id));
    for e in [&got[1], &got[2], &got[4]] {
        assert_eq!(e["target"], json!(id), "{e}");
    }
    // The webhook is told which of its own deliveries each one refers to,
    // looked up in the message map written before the kill.
    for e in &got[1..] {
        assert_eq!(e["target_delivery_id"], json!(original_delivery), "{e}");
    }

    // matterbridge readers get the edit as a message carrying the original id.
    let polled: Vec<Value> = poll_mb(&client, &sb.api, "bob").await;
    let edit = polled
        .iter()
        .find(|m| m["text"] == "first")
        .expect("edit delivered");
    assert_eq!(edit["id"], json!(id));
    sb.stop().await;
}
