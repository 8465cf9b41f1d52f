//! The OpenAPI documents are generated from the handlers' own types, and
//! say exactly what the server takes: the four requests the hand-written
//! document used to allow and the server refused (an empty emoji, an
//! empty matterbridge post, an empty `consumer`, unknown properties on an
//! edit) are refused by the document now, and an OpenAPI fuzzer
//! (schemathesis, every check on; `tests/support/schemathesis.toml`) run
//! against the served bot API and admin API documents finds no mismatch
//! and no server error, on SQLite and PostgreSQL. The streaming routes
//! (SSE, WebSockets, NDJSON) answer endlessly and are left out of the fuzz
//! run; their parameters are the same types as `GET /api/messages`'.

use std::process::Command;

use serde_json::Value;

use crate::harness::*;

on_both_backends!(served_documents_match_the_server_under_a_fuzzer => |backend| fuzz(backend));

fn schemathesis() -> String {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/schemathesis-venv.sh"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "schemathesis: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    format!("{venv}/bin/schemathesis")
}

/// One bounded schemathesis run (its cache in `dir`); panics with its
/// report on any failure.
fn run(st: &str, dir: &std::path::Path, url: &str, token: &str, extra: &[&str]) {
    let out = Command::new(st)
        .current_dir(dir)
        .arg("--config-file")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/schemathesis.toml"
        ))
        .arg("run")
        .arg(url)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--max-examples",
            "25",
            "--request-timeout",
            "5",
            "--seed",
            "24",
        ])
        .args(["--max-failures", "5"])
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis against {url}:\n{report}"
    );
}

async fn fuzz(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("fuzzer", r#"["read", "write"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", sb.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    // The four the hand-written document got wrong.
    assert_eq!(
        schemas["ReactBody"]["properties"]["emoji"]["minLength"], 1,
        "an empty emoji is refused"
    );
    let compat = schemas["CompatPost"].to_string();
    assert!(
        compat.contains("\"required\":[\"gateway\"]") && compat.contains("anyOf"),
        "a matterbridge post needs a gateway and text or a file: {compat}"
    );
    let consumer = doc["paths"]["/api/messages"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "consumer")
        .cloned()
        .unwrap();
    assert_eq!(consumer["schema"]["minLength"], 1, "{consumer}");
    assert_eq!(
        schemas["EditBody"]["additionalProperties"], false,
        "an edit takes no unknown properties"
    );
    // The admin API's document needs the admin token like the rest.
    let r = reqwest::get(format!("{}/v1/openapi.json", sb.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let st = schemathesis();
    let streams = [
        "--exclude-path-regex",
        "events|/v1/ws|/api/stream|/api/websocket",
    ];
    run(
        &st,
        dir.path(),
        &format!("{}/v1/openapi.json", sb.api),
        &secret("fuzzer"),
        &streams,
    );
    run(
        &st,
        dir.path(),
        &format!("{}/v1/openapi.json", sb.admin),
        ADMIN_TOKEN,
        &[],
    );
    drop(sb);
}

/// What the fuzzer found on PostgreSQL: a value it cannot store (a NUL
/// byte, SQLSTATE 22021) is that request's problem, not the database
/// being down; its all-digit SQLSTATE was read as SQLite's BUSY, and the
/// store writer went down for everyone.
#[tokio::test]
async fn a_value_postgresql_cannot_store_is_not_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Postgres, dir.path()).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let e = sqlx::query("SELECT CAST($1 AS TEXT)")
        .bind("a\0b")
        .execute(&pool)
        .await
        .expect_err("PostgreSQL stores no NUL");
    let e = switchboard::store::StoreError::from(e);
    assert!(!e.is_unavailable(), "{e}");
    pool.close().await;
}
