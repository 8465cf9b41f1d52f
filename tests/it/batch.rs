//! Webhooks with `batch` set (issue 26): a backlog drains in signed POSTs of
//! JSON arrays, every message exactly once and in order; a batch that fails
//! is retried whole; a batch refused with a 4xx goes again one at a time,
//! so only the row at fault is dead-lettered; without `batch`, one object
//! per POST as before.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::*;

/// `[[api.bots.webhooks]]` taking up to `n` deliveries per POST.
fn batched_webhook(name: &str, port: u16, n: usize) -> String {
    webhook(name, port, r#"["g"]"#) + &format!("batch = {n}\n")
}

async fn post_all(client: &reqwest::Client, api: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    for i in 0..n {
        let text = format!("{prefix} {i}");
        let (status, body) = post_native(client, api, "producer", "g", json!({"text": text}), None)
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        texts.push(text);
    }
    texts
}

/// Every delivery the receiver took, in arrival order, across its POSTs.
fn items(r: &Receiver) -> Vec<Value> {
    r.deliveries().iter().flat_map(Delivery::items).collect()
}

fn item_texts(r: &Receiver) -> Vec<String> {
    items(r)
        .iter()
        .map(|i| i["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Each delivery id once: nothing was delivered twice.
fn assert_once(r: &Receiver, what: &str) {
    let ids: Vec<String> = items(r)
        .iter()
        .map(|i| i["delivery_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what}: a delivery id came twice");
}

on_both_backends!(a_batched_webhook_drains_its_backlog_once_in_order_in_fewer_posts => |backend| backlog(backend));

/// A batched webhook and a plain one, both down while 120 messages are
/// posted, then up: the batched one gets them in arrays of at most 25,
/// each POST signed over its exact body; the plain one gets 120 objects.
async fn backlog(backend: Backend) {
    const N: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let (mut batched, mut plain) = (Receiver::new(), Receiver::new());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &batched_webhook("batched", batched.port, 25)
        + &webhook("plain", plain.port, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let expected = post_all(&client, &sb.api, "m", N).await;
    until("the backlog to wait in both queues", || async {
        sb.queue_depth().await == i64::try_from(2 * N).unwrap()
    })
    .await;
    batched.up().await;
    plain.up().await;
    until_count("the batched webhook's deliveries", N, || {
        items(&batched).len()
    })
    .await;
    until_count("the plain webhook's deliveries", N, || items(&plain).len()).await;
    sb.drained().await;

    assert_eq!(
        item_texts(&batched),
        expected,
        "batched: every message, in order"
    );
    assert_once(&batched, "batched");
    let posts = batched.deliveries();
    assert!(
        posts.len() < N,
        "a backlog goes in fewer POSTs than messages: {} for {N}",
        posts.len()
    );
    assert!(
        posts.iter().any(|d| d.items().len() > 1),
        "some POST carried several"
    );
    for d in &posts {
        assert!(
            d.signed_with(&hook_secret("batched")),
            "a batch signed over its exact body"
        );
        let Value::Array(batch) = &d.body else {
            panic!("with batch set, every body is an array: {}", d.body);
        };
        assert!(
            !batch.is_empty() && batch.len() <= 25,
            "{} in one POST",
            batch.len()
        );
        assert_eq!(d.batch.as_deref(), Some(batch.len().to_string().as_str()));
        assert_eq!(batch[0]["delivery_id"], d.delivery_id.as_str());
    }

    assert_eq!(
        item_texts(&plain),
        expected,
        "plain: every message, in order"
    );
    assert_once(&plain, "plain");
    let posts = plain.deliveries();
    assert_eq!(posts.len(), N, "without batch, one delivery per POST");
    for d in &posts {
        assert!(d.body.is_object(), "without batch, an object: {}", d.body);
        assert_eq!(d.batch, None);
        assert_eq!(d.body["delivery_id"], d.delivery_id.as_str());
        assert!(d.signed_with(&hook_secret("plain")));
    }
}

on_both_backends!(kill9_while_batches_drain_repeats_at_most_the_batch_in_flight => |backend| kill9_mid_drain(backend));

/// kill -9 while a batched webhook drains a backlog, then restart: every
/// message arrives, in order; what comes twice is only the POST whose
/// answer the killed process never heard (the receiver answers each POST
/// late), again under the same delivery ids, so the receiver can tell.
async fn kill9_mid_drain(backend: Backend) {
    const N: usize = 400;
    const BATCH: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &batched_webhook("batched", hook.port, BATCH)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let expected = post_all(&client, &sb.api, "m", N).await;
    until("the backlog to wait", || async {
        sb.queue_depth().await == i64::try_from(N).unwrap()
    })
    .await;
    hook.set(Mode::Slow(200));
    hook.up().await;
    until_count("a quarter of the backlog", N / 4, || items(&hook).len()).await;
    sb.kill9();
    let before = items(&hook).len();
    assert!(
        before < N,
        "killed before the drain ended ({before} of {N})"
    );
    hook.set(Mode::Accept);
    sb.restart().await;
    until_count("the rest after the restart", N, || {
        let mut ids = HashSet::new();
        items(&hook)
            .iter()
            .filter(|i| ids.insert(i["delivery_id"].as_str().unwrap_or_default().to_owned()))
            .count()
    })
    .await;
    sb.drained().await;

    // Every delivery id stands for one message: its first arrival in
    // order, a repeat of it is the same message again.
    let mut first: Vec<(String, String)> = Vec::new();
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut repeats = 0;
    for i in items(&hook) {
        let id = i["delivery_id"].as_str().unwrap().to_owned();
        let text = i["text"].as_str().unwrap_or_default().to_owned();
        match seen.get(&id) {
            Some(t) => {
                assert_eq!(t, &text, "a delivery id names one message");
                repeats += 1;
            }
            None => {
                seen.insert(id.clone(), text.clone());
                first.push((id, text));
            }
        }
    }
    let texts: Vec<String> = first.into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts, expected, "every message, once, in order");
    eprintln!("{repeats} repeated after the kill ({before} had arrived)");
    assert!(
        repeats <= BATCH,
        "only the POST in flight comes again: {repeats} repeats"
    );
    for d in hook.deliveries() {
        assert!(d.signed_with(&hook_secret("batched")));
    }
}

/// A webhook that refuses batches with 500 (a lone delivery goes through)
/// until told otherwise: the batch is retried whole and lands once.
#[tokio::test]
async fn a_batch_refused_with_500_is_retried_whole_and_delivered_once() {
    const N: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    *hook.refuse.lock().unwrap() = Some(Refusal::Batches(500));
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &batched_webhook("hook", hook.port, 100)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let expected = post_all(&client, &sb.api, "m", N).await;
    until("the backlog to wait", || async {
        sb.queue_depth().await == i64::try_from(N).unwrap()
    })
    .await;
    hook.up().await;
    // The first message went alone (nothing waited behind it when it was
    // first tried); the rest went as one batch, refused twice.
    eventually("a batch refused twice", || {
        hook.refused_at.lock().unwrap().len() >= 2
    })
    .await;
    assert!(
        items(&hook).len() < N,
        "nothing of the refused batch was taken"
    );
    *hook.refuse.lock().unwrap() = None;
    until_count("every delivery", N, || items(&hook).len()).await;
    sb.drained().await;
    assert_eq!(item_texts(&hook), expected, "every message, in order");
    assert_once(&hook, "after a refused batch");
    assert!(
        hook.deliveries().iter().any(|d| d.items().len() > 1),
        "the retried batch went as one POST"
    );
}

/// A 4xx for a batch holding one bad delivery: the batch goes again one
/// delivery per POST; only the bad one is dead-lettered, the others arrive
/// once and in order, and batching goes on after it.
#[tokio::test]
async fn a_4xx_in_a_batch_dead_letters_only_the_row_at_fault() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    *hook.refuse.lock().unwrap() = Some(Refusal::Containing("poison".into(), 422));
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &batched_webhook("hook", hook.port, 10)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let mut expected = post_all(&client, &sb.api, "a", 5).await;
    post_all(&client, &sb.api, "poison", 1).await;
    expected.extend(post_all(&client, &sb.api, "b", N - 6).await);
    until("the backlog to wait", || async {
        sb.queue_depth().await == i64::try_from(N).unwrap()
    })
    .await;
    hook.up().await;
    until_count("every good delivery", N - 1, || items(&hook).len()).await;
    sb.drained().await;
    assert_eq!(item_texts(&hook), expected, "every good message, in order");
    assert_once(&hook, "around a refused row");

    let dead = admin_get(&sb.admin, "/v1/dead-letters")
        .await
        .json::<Value>()
        .await
        .unwrap()["dead_letters"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(dead.len(), 1, "only the bad row: {dead:?}");
    assert_eq!(dead[0]["channel"], "webhook:hook");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("422"),
        "{dead:?}"
    );
    let posts = hook.deliveries();
    assert!(
        posts.len() < N - 1,
        "batching went on around the refused row: {} POSTs",
        posts.len()
    );
    for d in &posts {
        assert!(d.signed_with(&hook_secret("hook")));
        assert!(d.items().len() <= 10);
    }
}

/// A dead letter requeued in place while the rows behind it wait (in a
/// batch, or alone) goes before them: the lane goes back to it, and the
/// rows go on in batches after it, each once.
#[tokio::test]
async fn a_dead_letter_requeued_in_place_goes_before_a_waiting_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    *hook.refuse.lock().unwrap() = Some(Refusal::Containing("poison".into(), 400));
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &batched_webhook("hook", hook.port, 10)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let mut expected = post_all(&client, &sb.api, "poison", 1).await;
    let dead_letters = || async {
        admin_get(&sb.admin, "/v1/dead-letters")
            .await
            .json::<Value>()
            .await
            .unwrap()["dead_letters"]
            .as_array()
            .unwrap()
            .clone()
    };
    until("the poison to die", || async {
        dead_letters().await.len() == 1
    })
    .await;
    let id = dead_letters().await[0]["id"].as_i64().unwrap();
    hook.set(Mode::Unavailable(1));
    expected.extend(post_all(&client, &sb.api, "m", 5).await);
    eventually("the rows behind it to be tried", || {
        !hook.refused_at.lock().unwrap().is_empty()
    })
    .await;
    let out = sb.cli(&["dead-letters", "requeue", &id.to_string()]);
    assert!(out.contains("requeued in its old place"), "{out}");
    *hook.refuse.lock().unwrap() = None;
    hook.set(Mode::Accept);
    until_count("every delivery", expected.len(), || items(&hook).len()).await;
    sb.drained().await;
    assert_eq!(
        item_texts(&hook),
        expected,
        "the requeued row first, then the rest"
    );
    assert_once(&hook, "after a requeue");
    assert!(dead_letters().await.is_empty());
}
