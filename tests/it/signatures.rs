//! The README's webhook verification examples (Python and JavaScript),
//! taken from the README itself and run against deliveries of the real
//! binary: a genuine delivery passes; a changed body, a changed time or a
//! wrong secret fails.

use std::process::Command;

use serde_json::json;

use crate::harness::*;

/// The first fenced block of `lang` after the webhook section's heading.
fn readme_block(lang: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("## Verifying webhook signatures")
        .expect("the section")..];
    let start = section.find(&format!("```{lang}\n")).expect("the block") + lang.len() + 4;
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_owned()
}

/// Runs `verify(secret, header, body)` in `lang`; true when it accepts.
fn run(lang: &str, dir: &std::path::Path, secret: &str, header: &str, body: &[u8]) -> bool {
    let body_path = dir.join("body.bin");
    std::fs::write(&body_path, body).unwrap();
    let (program, file, main) = match lang {
        "python" => (
            "python3",
            "verify.py",
            "\nimport sys\nok = verify(sys.argv[1].encode(), sys.argv[2], open(sys.argv[3], 'rb').read())\nsys.exit(0 if ok else 1)\n",
        ),
        _ => (
            "node",
            "verify.js",
            "\nconst fs = require('fs');\nconst [secret, header, path] = process.argv.slice(2);\nprocess.exit(verify(secret, header, fs.readFileSync(path)) ? 0 : 1);\n",
        ),
    };
    let script = dir.join(file);
    std::fs::write(&script, readme_block(lang) + main).unwrap();
    let out = Command::new(program)
        .arg(&script)
        .args([secret, header])
        .arg(&body_path)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for this test: {e}"));
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("{program} failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test]
async fn the_readmes_python_and_javascript_examples_verify_real_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &webhook("hook", hook.port, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let (status, _) = post_native(
        &client,
        &sb.api,
        "producer",
        "g",
        json!({"text": "signed"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    eventually("the delivery", || hook.deliveries().len() == 1).await;
    let d = hook.deliveries().remove(0);
    let secret = hook_secret("hook");
    let (t, v1) = d
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .expect("t=<unix>,v1=<hex>");
    let older = format!("t={},v1={v1}", t.parse::<i64>().unwrap() - 1000);
    let mut tampered = d.raw.clone();
    tampered.push(b' ');
    for lang in ["python", "js"] {
        assert!(
            run(lang, dir.path(), &secret, &d.signature, &d.raw),
            "{lang}: a real delivery"
        );
        assert!(
            !run(lang, dir.path(), &secret, &d.signature, &tampered),
            "{lang}: a changed body"
        );
        assert!(
            !run(lang, dir.path(), &secret, &older, &d.raw),
            "{lang}: a replayed, re-dated one"
        );
        assert!(
            !run(lang, dir.path(), "not-the-secret", &d.signature, &d.raw),
            "{lang}: a wrong secret"
        );
    }
}
