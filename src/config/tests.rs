//! The settings: defaults, validation, and what each setting means.

use super::validate::MIN_SESSION_BYTES;
use super::*;
use crate::adapters::ws::MAX_QUEUE_FRAMES;

fn with_url(url: Option<&str>) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: PathBuf::from("/var/lib/confab"),
        database_url: url.map(str::to_owned),
        jwt_secret: None,
        token_ttl_secs: 1,
        refresh_ttl_secs: 1,
        refresh_grace_secs: 0,
        max_devices_per_user: 1,
        revocation_sweep_secs: 1,
        sqlite_scrub_secs: 30,
        rate_per_sec: 1,
        rate_burst: 1,
        auth_rate_per_sec: 1,
        auth_rate_burst: 1,
        heartbeat_secs: 1,
        max_sessions_per_user: 1,
        log: "info".into(),
        outbound_queue: 1,
        outbound_session_bytes: MIN_SESSION_BYTES,
        outbound_total_bytes: 1,
        slow_consumer_secs: 1,
        shutdown_grace_secs: 1,
        argon2_memory_kib: 8,
        argon2_iterations: 1,
        redis_url: None,
        node_id: None,
        redis_prefix: "confab".into(),
        presence_ttl_secs: 12,
        cluster_reorder_ms: 200,
        cluster_resync_secs: 10,
        cluster_probe_secs: 5,
        faults: None,
        request_timeout_secs: 20,
        max_connections_per_address: 256,
        reserved_fds: 128,
        trusted_proxies: Vec::new(),
        login_free_failures: 5,
        login_max_lock_secs: 60,
        metrics_addr: None,
        files_url: None,
        files_base_url: None,
        max_file_bytes: 100 << 20,
        file_quota_bytes: 1 << 30,
        uploads_per_minute: 30,
        unattached_file_ttl_secs: 86_400,
        files_sweep_secs: 600,
        files_orphan_grace_secs: 3600,
        upload_ttl_secs: 86_400,
        thumbnail_workers: 2,
    }
}

#[test]
fn trusted_proxies_and_the_metrics_address_are_checked() {
    let mut s = with_url(None);
    s.trusted_proxies = vec!["10.0.0.0/8".into(), "192.168.1.1".into()];
    assert!(
        s.trusted_proxies()
            .unwrap()
            .contains("10.1.2.3".parse().unwrap())
    );
    s.trusted_proxies.push("10.0.0.0/99".into());
    let err = s.validate().unwrap_err().to_string();
    assert!(
        err.contains("trusted_proxies") && err.contains("10.0.0.0/99"),
        "{err}"
    );
    s.trusted_proxies.clear();
    s.metrics_addr = Some("127.0.0.1:9090".into());
    assert_eq!(
        s.metrics_addr().unwrap(),
        Some("127.0.0.1:9090".parse().unwrap())
    );
    s.metrics_addr = Some("localhost".into());
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("metrics_addr")
    );
    s.metrics_addr = Some(String::new());
    assert_eq!(s.metrics_addr().unwrap(), None);
    s.request_timeout_secs = 0;
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("request_timeout_secs")
    );
}

#[test]
fn cluster_mode_needs_postgres_and_a_shared_secret() {
    let mut s = with_url(Some("postgres://db/confab"));
    s.redis_url = Some("redis://127.0.0.1:6379/".into());
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("jwt_secret"), "{err}");
    s.jwt_secret = Some("0123456789abcdef".into());
    s.validate().unwrap();
    let bound = "10.0.0.5:8080".parse().unwrap();
    let cluster = s.cluster(bound).unwrap();
    assert_eq!(cluster.node_id, "10.0.0.5:8080");
    assert_eq!(cluster.presence_ttl, Duration::from_secs(12));
    let mut sqlite = s.clone();
    sqlite.database_url = None;
    let err = sqlite.validate().unwrap_err().to_string();
    assert!(err.contains("postgres"), "{err}");
    s.redis_url = Some("http://x".into());
    assert!(s.validate().unwrap_err().to_string().contains("redis_url"));
    s.redis_url = Some(String::new());
    assert!(s.cluster(bound).is_none(), "empty means single-process");
}

#[test]
fn cluster_bounds_are_checked() {
    let mut s = with_url(None);
    s.cluster_reorder_ms = 501;
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("cluster_reorder_ms")
    );
    s.cluster_reorder_ms = 200;
    s.presence_ttl_secs = 1;
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("presence_ttl_secs")
    );
    s.presence_ttl_secs = 12;
    s.faults = Some("drop_publish_every:x".into());
    assert!(s.validate().unwrap_err().to_string().contains("faults"));
}

#[test]
fn outbound_limits_are_checked() {
    let mut s = with_url(None);
    s.validate().unwrap();
    s.outbound_session_bytes = MIN_SESSION_BYTES - 1;
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("outbound_session_bytes"), "{err}");
    s.outbound_session_bytes = MIN_SESSION_BYTES;
    s.outbound_queue = MAX_QUEUE_FRAMES + 1;
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("outbound_queue")
    );
    s.outbound_queue = MAX_QUEUE_FRAMES;
    s.slow_consumer_secs = 0;
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("slow_consumer_secs")
    );
}

#[test]
fn the_sqlite_scrub_interval_is_1_to_3600_seconds() {
    let mut s = with_url(None);
    for (secs, ok) in [(0, false), (1, true), (3600, true), (3601, false)] {
        s.sqlite_scrub_secs = secs;
        match s.validate() {
            Ok(()) => assert!(ok, "{secs}"),
            Err(e) => assert!(!ok && e.to_string().contains("sqlite_scrub_secs"), "{e}"),
        }
    }
}

#[test]
fn without_a_url_the_database_is_sqlite_in_the_data_dir() {
    for url in [None, Some("")] {
        assert_eq!(
            with_url(url).database().unwrap(),
            Database::Sqlite("/var/lib/confab/confab.db".into())
        );
    }
}

#[test]
fn sqlite_urls_and_plain_paths_name_a_file() {
    for (url, path) in [
        ("sqlite:///srv/c.db", "/srv/c.db"),
        ("sqlite://c.db", "c.db"),
        ("sqlite:c.db", "c.db"),
        ("/srv/c.db", "/srv/c.db"),
        ("data/c.db", "data/c.db"),
    ] {
        assert_eq!(
            with_url(Some(url)).database().unwrap(),
            Database::Sqlite(path.into()),
            "{url}"
        );
    }
}

#[test]
fn postgres_urls_name_a_postgres_database() {
    for url in [
        "postgres://confab@db.example/confab",
        "postgresql://confab:pw@127.0.0.1:5432/confab?sslmode=require",
    ] {
        assert_eq!(
            with_url(Some(url)).database().unwrap(),
            Database::Postgres(url.into())
        );
    }
}

#[test]
fn an_unknown_scheme_is_refused_without_repeating_the_url() {
    let err = with_url(Some("mysql://root:hunter2@db/confab"))
        .database()
        .unwrap_err()
        .to_string();
    assert!(err.contains("database_url"), "{err}");
    assert!(err.contains("\"mysql\""), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_postgres_url_is_logged_with_its_password_masked() {
    for (url, shown) in [
        (
            "postgres://confab:hunter2@db:5432/confab",
            "PostgreSQL at postgres://confab:***@db:5432/confab",
        ),
        (
            "postgresql://confab:p%40ss@db/confab?sslmode=require&password=hunter2",
            "PostgreSQL at postgresql://confab:***@db/confab?sslmode=require&password=***",
        ),
        (
            "postgres://confab@db?password=hunter2",
            "PostgreSQL at postgres://confab@db?password=***",
        ),
        ("postgres://db/confab", "PostgreSQL at postgres://db/confab"),
    ] {
        let shown_now = Database::Postgres(url.into()).to_string();
        assert_eq!(shown_now, shown);
        assert_eq!(format!("{:?}", Database::Postgres(url.into())), shown);
    }
}

#[test]
fn errors_quoting_a_password_are_scrubbed() {
    let db = Database::Postgres("postgres://confab:s%zzret@db/c?password=other".into());
    assert_eq!(
        db.scrub(r#"invalid percent-encoded token: "s%zzret"; other"#),
        r#"invalid percent-encoded token: "***"; ***"#
    );
    let file = Database::Sqlite("/srv/c.db".into());
    assert_eq!(file.scrub("secret stays"), "secret stays");
}

#[test]
fn overrides_replace_the_defaults_and_are_checked() {
    let s = Settings::from_overrides(&[("port", "0"), ("rate_burst", "7")]).unwrap();
    assert_eq!((s.port, s.rate_burst, s.rate_per_sec), (0, 7, 20));
    let err = Settings::from_overrides(&[("rate_burst", "0")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_burst"), "{err}");
}
