//! Every destination counts for notices: a webhook whose `gateways` names
//! a gateway its bot API account is no member of gets the gateway's
//! messages like any destination, and when it is down the gateway hears
//! it (down, then back), exactly as for a webhook on a member account.

use serde_json::{json, Value};

use crate::harness::*;

on_both_backends!(a_non_member_webhook_is_a_destination_and_its_outage_is_announced => |backend| non_member_webhook(backend));

async fn non_member_webhook(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin, hooks_api) = (free_port(), free_port(), free_port());
    let (mut bad, mut good) = (Receiver::new(), Receiver::new());
    bad.up().await;
    good.up().await;
    // `api.hooks` is in no gateway; its webhook names `g`.
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &webhook("good", good.port, r#"["g"]"#)
        + &format!(
            "\n[api.hooks]\nbind = \"127.0.0.1:{hooks_api}\"\n[[api.hooks.tokens]]\nname = \"h\"\ntoken = \"{}\"\n\
             [[api.hooks.webhooks]]\nname = \"bad\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"s\"\ngateways = [\"g\"]\ntimeout = \"1s\"\n",
            secret("h"),
            bad.port
        )
        + "\n[[gateway]]\nname = \"g\"\nnotice_after = \"1s\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n";
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let check = sb.cli(&["check"]);
    assert!(
        check.contains("api.hooks") && check.contains("webhook:bad"),
        "{check}"
    );
    let c = reqwest::Client::new();
    let say = |text: &'static str| {
        let (c, api) = (c.clone(), sb.api.clone());
        async move {
            let (s, b) = post_native(&c, &api, "producer", "g", json!({"text": text}), None)
                .await
                .unwrap();
            assert_eq!(s, 201, "{b}");
        }
    };
    say("one").await;
    eventually("one on both webhooks", || {
        bad.deliveries().len() == 1 && good.deliveries().len() == 1
    })
    .await;
    bad.down();
    say("two").await;
    let notices = |r: &Receiver| -> Vec<String> {
        r.deliveries()
            .into_iter()
            .map(|d| d.body)
            .filter(|b: &Value| b["type"] == "notice")
            .map(|b| b["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    eventually("a down notice in g", || notices(&good).len() == 1).await;
    assert!(
        notices(&good)[0].contains("webhook `bad` (api.hooks)"),
        "{:?}",
        notices(&good)
    );
    bad.up().await;
    eventually("the backlog", || bad.deliveries().len() == 2).await;
    eventually("a back notice in g", || notices(&good).len() == 2).await;
    assert!(
        notices(&good)[1].contains("is back after"),
        "{:?}",
        notices(&good)
    );
    assert!(notices(&bad).is_empty(), "never told about itself");
    drop(sb);
}
