//! One instance per database unless they are a cluster: a second one
//! refuses to start and says why and what to do. Through the binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// `[cluster]` for instance `name`.
fn cluster(name: &str) -> String {
    format!("\n[cluster]\nenabled = true\ninstance = \"{name}\"\ntakeover_after = \"3s\"\n")
}

/// A configuration on `db` with its own ports and data directory in `dir`.
fn config(db: &Db, dir: &Path, extra: &str) -> (String, u16, u16) {
    let (api, admin) = (free_port(), free_port());
    (base_config(db, dir, api, admin) + extra, api, admin)
}

/// Starts an instance and waits until it is all up (its SIGTERM handler
/// is installed last, after the listeners answer).
async fn start(dir: &Path, cfg: &str, api: u16, admin: u16) -> Sb {
    let sb = Sb::start(dir, cfg, api, admin).await;
    until("the instance to be running", || async {
        sb.log().contains("switchboard is running")
    })
    .await;
    sb
}

/// Runs `switchboard run` on `config`, which must exit with a failure
/// before `PATIENCE`; its stderr.
fn refused(dir: &Path, config: &str) -> String {
    let path = dir.join("refused.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the second instance started");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[tokio::test]
async fn a_second_instance_on_a_sqlite_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (cfg, api, admin) = config(&db, dir.path(), "");
    let mut first = start(dir.path(), &cfg, api, admin).await;
    let other = tempfile::tempdir().unwrap();
    let (cfg2, api2, admin2) = config(&db, other.path(), "");
    let err = refused(other.path(), &cfg2);
    assert!(err.contains("another switchboard (pid "), "{err}");
    assert!(err.contains("sb.db.lock"), "{err}");
    assert!(
        err.contains("PostgreSQL with [cluster] enabled = true"),
        "{err}"
    );
    // A cluster is refused on SQLite by the configuration itself.
    let path = other.path().join("cluster.toml");
    std::fs::write(&path, cfg2.clone() + &cluster("x")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cluster.enabled: several instances need PostgreSQL"),
        "{text}"
    );
    // Once the first stopped, the second starts.
    first.stop().await;
    let mut second = start(other.path(), &cfg2, api2, admin2).await;
    second.stop().await;
}

#[tokio::test]
async fn on_postgres_a_second_instance_starts_only_as_a_member_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Postgres, dir.path()).await;
    let (cfg, api, admin) = config(&db, dir.path(), "");
    let mut lone = start(dir.path(), &cfg, api, admin).await;
    let other = tempfile::tempdir().unwrap();
    let err = refused(other.path(), &config(&db, other.path(), "").0);
    assert!(
        err.contains("another switchboard instance is running on"),
        "{err}"
    );
    assert!(
        err.contains("set [cluster] enabled = true on every instance"),
        "{err}"
    );
    let err = refused(other.path(), &config(&db, other.path(), &cluster("m")).0);
    assert!(
        err.contains("a switchboard instance without [cluster] is running"),
        "{err}"
    );
    lone.stop().await;

    // A cluster: members start beside each other; a lone instance does not.
    let (cfg, api, admin) = config(&db, dir.path(), &cluster("a"));
    let mut a = start(dir.path(), &cfg, api, admin).await;
    let b_dir = tempfile::tempdir().unwrap();
    let (cfg_b, api_b, admin_b) = config(&db, b_dir.path(), &cluster("b"));
    let mut b = start(b_dir.path(), &cfg_b, api_b, admin_b).await;
    let err = refused(other.path(), &config(&db, other.path(), "").0);
    assert!(
        err.contains("instances with [cluster] enabled = true are running on"),
        "{err}"
    );
    assert!(
        err.contains("switchboard-a") && err.contains("switchboard-b"),
        "{err}"
    );
    assert!(err.contains("this one has no [cluster] section"), "{err}");
    // Two instances of one name: the second waits for the first's lease to
    // run out (it may have just died), then refuses.
    let err = refused(other.path(), &config(&db, other.path(), &cluster("a")).0);
    assert!(err.contains("an instance named `a` is running"), "{err}");
    assert!(err.contains("its own [cluster] instance name"), "{err}");
    // status names both, live.
    let status = a.cli(&["status"]);
    assert!(status.contains("RECEIVING ON"), "{status}");
    for name in ["a", "b"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains(" live ")),
            "{status}"
        );
    }
    b.stop().await;
    a.stop().await;
}
