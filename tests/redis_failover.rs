//! The Redis replay store through a failover, on real processes on loopback:
//! - **Sentinel**: a master, two replicas (`--replicaof`) and three Sentinels (quorum 2), all
//!   with a password; the guard finds the master through the Sentinels
//!   (`replay.redis_mode = "sentinel"`, the password and the master's database in the URLs)
//!   and waits for one replica per new jti (`replay.redis_wait_replicas = 1`).
//! - **Cluster**: three masters with one replica each, made a cluster by
//!   `redis-cli --cluster create`; the guard is given the seed nodes
//!   (`replay.redis_mode = "cluster"`).
//!
//! Under a bounded load of launches (fresh tokens and replays of a shared pool), a master is
//! SIGKILLed. Launches get 503 while there is no master, and are accepted again after the
//! failover; the upstream counts what it received per jti, and no jti arrives twice, and
//! every pool token accepted before the kill is still refused as replayed after it. Without
//! `redis-server` the tests say so and pass, except under CI. `hti-guard check` shows the
//! Sentinel keys set from the environment, passwords masked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mint::{self, Alg};
use common::*;

/// The bound on each wait (a failover on loopback takes a few seconds).
const LIMIT: Duration = Duration::from_secs(30);
/// The bound on one launch through the guard.
const CALL: Duration = Duration::from_secs(10);
/// The bound on a whole failover test (see [`Watchdog`]).
const WHOLE: Duration = Duration::from_secs(240);
/// Load workers, and their pause between launches.
const WORKERS: usize = 4;
const PAUSE: Duration = Duration::from_millis(10);
/// Tokens every worker keeps resubmitting (each may be accepted once in all).
const POOL: usize = 24;
/// The Sentinel set's password (the Sentinels' and the master's).
const PASSWORD: &str = "s3cret-pw";

/// A guard on `configure`'s replay store, an upstream that counts jtis, a token minter and
/// a pool of tokens to replay.
struct Bench {
    upstream: JtiCounter,
    guard: Guard,
    client: reqwest::Client,
    mint: Mint,
    pool: Arc<Vec<String>>,
}

impl Bench {
    async fn start(configure: impl FnOnce(GuardBuilder) -> GuardBuilder) -> Bench {
        let upstream = JtiCounter::start().await;
        let key = mint::shared_key(Alg::ES256);
        let jwks = JwksServer::start(&[key]).await;
        let iss = unique_issuer();
        let guard = configure(
            GuardBuilder::new(&upstream.url())
                .issuer(&iss, &jwks.url())
                .set_str("replay.store", "redis")
                .set_str("replay.redis_timeout", "250ms"),
        )
        .start()
        .await;
        let mint: Mint = Arc::new(move || key.token(&mint::hti_claims(&iss, AUDIENCE)));
        let pool = Arc::new((0..POOL).map(|_| mint()).collect());
        Bench {
            upstream,
            guard,
            // A launch answers within the store's 250 ms timeout; one that does not is a
            // failure within this bound, not a wait of the default client's minute.
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(CALL)
                .build()
                .expect("client"),
            mint,
            pool,
        }
    }

    async fn launch(&self, token: &str) -> String {
        outcome(self.guard.launch(&self.client, token).await).await
    }

    /// Workers that alternate a pool token and a fresh one until stopped, recording each
    /// outcome with the token's jti.
    fn load(&self) -> LaunchLoad {
        let url = self.guard.url("/launch");
        LaunchLoad::start(&self.client, &url, &self.pool, &self.mint, WORKERS, PAUSE)
    }

    /// Fresh launches until one gets `reason` (at most `tries`).
    async fn until_fresh(&self, reason: &str, tries: usize) -> bool {
        for _ in 0..tries {
            if self.launch(&(self.mint)()).await == reason {
                return true;
            }
        }
        false
    }
}

/// What must hold after a failover: only these outcomes, the load met the outage, no jti
/// reached the upstream twice, each accepted one exactly once, and every pool token that
/// was accepted is refused as replayed now. Right after a failover the topology may still
/// be settling (a rejoining replica's sync, a slot map refresh), so a replay may meet a 503
/// first; it must end as "replayed" and never be accepted.
async fn assert_no_jti_twice(bench: &Bench, outcomes: &[(String, String)], what: &str) {
    let seen = bench.upstream.seen();
    let counted = Outcomes::no_jti_twice(outcomes, &seen, what);
    assert!(counted.replayed >= 1, "the load replayed pool tokens");
    // After the failover the new master still knows every pool token it accepted.
    let mut pool_accepted = 0;
    for token in bench.pool.iter() {
        if counted.accepted_jtis.contains(&jti_of(token)) {
            pool_accepted += 1;
            eventually(
                LIMIT,
                "an accepted pool token refused as replayed",
                || async {
                    let answer = bench.launch(token).await;
                    assert_ne!(answer, "accepted", "{} accepted again", jti_of(token));
                    answer == "replayed"
                },
            )
            .await;
        }
    }
    assert!(pool_accepted >= 1, "some pool tokens were accepted");
    assert_eq!(
        bench.upstream.seen().values().sum::<usize>(),
        seen.values().sum::<usize>(),
        "the replays after the failover reached nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_load_accepts_no_jti_twice_and_resumes() {
    if !redis_installed() {
        return;
    }
    let watch = Watchdog::new("sentinel failover", WHOLE);
    let mut master = Redis::new(None, &[]).password(PASSWORD);
    master.run().await;
    let mut replicas = [
        Redis::replica_of(master.port).password(PASSWORD),
        Redis::replica_of(master.port).password(PASSWORD),
    ];
    for replica in &mut replicas {
        replica.run().await;
    }
    eventually(LIMIT, "both replicas in sync", || async {
        let info = master.cli(&["INFO", "replication"]).await;
        info.matches("state=online").count() == 2
    })
    .await;
    watch.stage("Sentinels starting");
    let mut sentinels = [
        Redis::sentinel("hti", master.port, Some(PASSWORD)).password(PASSWORD),
        Redis::sentinel("hti", master.port, Some(PASSWORD)).password(PASSWORD),
        Redis::sentinel("hti", master.port, Some(PASSWORD)).password(PASSWORD),
    ];
    for sentinel in &mut sentinels {
        sentinel.run().await;
    }
    for sentinel in &sentinels {
        eventually(
            LIMIT,
            "the Sentinels know each other and the replicas",
            || async {
                let master = sentinel.cli(&["SENTINEL", "MASTER", "hti"]).await;
                let ckquorum = sentinel.cli(&["SENTINEL", "CKQUORUM", "hti"]).await;
                ckquorum.starts_with("OK 3 usable") && master.contains("num-slaves\n2")
            },
        )
        .await;
    }

    // The Sentinels' URLs carry the password (theirs and the master's) and, in the first,
    // the master's database.
    let nodes: Vec<String> = sentinels
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let db = if n == 0 { "/2" } else { "" };
            toml_str(&format!("redis://:{PASSWORD}@127.0.0.1:{}{db}", s.port))
        })
        .collect();
    let nodes = format!("[{}]", nodes.join(", "));
    watch.stage("guard starting");
    let bench = Bench::start(|builder| {
        builder
            .set_str("replay.redis_mode", "sentinel")
            .set("replay.redis_nodes", &nodes)
            .set_str("replay.sentinel_master", "hti")
            .set("replay.redis_wait_replicas", "1")
    })
    .await;
    assert_eq!(bench.launch(&(bench.mint)()).await, "accepted");

    watch.stage("load running, the master to be killed");
    let load = bench.load();
    tokio::time::sleep(Duration::from_millis(800)).await;
    master.kill().await;
    watch.stage("waiting for a 503");
    // No master: launches are refused with 503 (the old one is gone, the Sentinels have not
    // promoted a replica yet).
    assert!(
        bench.until_fresh("replay_store_unavailable", 20).await,
        "a launch refused with 503 while there is no master"
    );
    watch.stage("waiting for the promotion");
    eventually(LIMIT, "a replica promoted by the Sentinels", || async {
        let answer = sentinels[0]
            .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "hti"])
            .await;
        replicas
            .iter()
            .any(|r| answer.ends_with(&r.port.to_string()))
    })
    .await;
    let answer = sentinels[0]
        .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "hti"])
        .await;
    let promoted = replicas
        .iter()
        .find(|r| answer.ends_with(&r.port.to_string()))
        .unwrap();
    watch.stage("waiting for launches accepted");
    eventually(LIMIT, "launches accepted after the failover", || async {
        bench.launch(&(bench.mint)()).await == "accepted"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.stage("stopping the load");
    let outcomes = load.finish(LIMIT).await;
    watch.stage("checking the outcomes");
    assert_no_jti_twice(&bench, &outcomes, "sentinel").await;

    let ready = bench.guard.admin_get("/readyz").await;
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"ready"}"#);
    // The jtis are in the database the first URL names, on the promoted replica.
    let keys: usize = promoted.cli(&["-n", "2", "DBSIZE"]).await.parse().unwrap();
    assert!(keys >= POOL, "{keys} keys in db 2");
    assert_eq!(promoted.cli(&["-n", "0", "DBSIZE"]).await, "0");
    let metrics = bench.guard.metrics().await;
    assert!(
        metrics.contains(r#"hti_guard_replay_checks_total{result="error",store="redis"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_under_load_accepts_no_jti_twice_and_resumes() {
    if !redis_installed() {
        return;
    }
    let watch = Watchdog::new("cluster failover", WHOLE);
    let mut nodes: Vec<Redis> = (0..6).map(|_| Redis::cluster_node()).collect();
    for node in &mut nodes {
        node.run().await;
    }
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    watch.stage("creating the cluster");
    let created = nodes[0].cli(&create).await;
    assert!(created.contains("All 16384 slots covered"), "{created}");
    for node in &nodes {
        eventually(LIMIT, "the cluster ok on every node", || async {
            node.cli(&["CLUSTER", "INFO"])
                .await
                .contains("cluster_state:ok")
        })
        .await;
    }
    // `--cluster create` makes the first three the masters; each has its replica in sync.
    for master in &nodes[..3] {
        assert!(master.cli(&["ROLE"]).await.starts_with("master"));
        eventually(LIMIT, "each master's replica in sync", || async {
            let info = master.cli(&["INFO", "replication"]).await;
            info.contains("state=online")
        })
        .await;
    }
    let victim = 1;
    let mut heir = None;
    for (n, node) in nodes.iter().enumerate().skip(3) {
        let role = node.cli(&["ROLE"]).await;
        if role.lines().nth(2) == Some(nodes[victim].port.to_string().as_str()) {
            heir = Some(n);
        }
    }
    let heir = heir.expect("the victim has a replica");

    let seeds: Vec<String> = nodes[..3].iter().map(|n| toml_str(&n.url())).collect();
    let seeds = format!("[{}]", seeds.join(", "));
    watch.stage("guard starting");
    let bench = Bench::start(|builder| {
        builder
            .set_str("replay.redis_mode", "cluster")
            .set("replay.redis_nodes", &seeds)
            .set("replay.redis_wait_replicas", "1")
    })
    .await;
    assert!(
        bench.until_fresh("accepted", 1).await,
        "a launch accepted on the cluster"
    );

    watch.stage("load running, the master to be killed");
    let load = bench.load();
    tokio::time::sleep(Duration::from_millis(800)).await;
    nodes[victim].kill().await;
    watch.stage("waiting for a 503");
    // Its slots have no master (a third of the jtis), and once it is marked failed the
    // whole cluster refuses writes until its replica takes over: 503.
    assert!(
        bench.until_fresh("replay_store_unavailable", 60).await,
        "a launch refused with 503 while a master is down"
    );
    watch.stage("waiting for the promotion");
    eventually(LIMIT, "the replica promoted", || async {
        nodes[heir].cli(&["ROLE"]).await.starts_with("master")
    })
    .await;
    // The killed node comes back on its port and data directory and rejoins as the new
    // master's replica, so `WAIT 1` is answered for its slots again.
    watch.stage("restarting the old master");
    nodes[victim].run().await;
    eventually(LIMIT, "the old master back as a replica", || async {
        nodes[victim].cli(&["ROLE"]).await.starts_with("slave")
    })
    .await;
    watch.stage("waiting for launches accepted");
    eventually(LIMIT, "launches accepted on every slot again", || async {
        for _ in 0..12 {
            if bench.launch(&(bench.mint)()).await != "accepted" {
                return false;
            }
        }
        true
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.stage("stopping the load");
    let outcomes = load.finish(LIMIT).await;
    watch.stage("checking the outcomes");
    assert_no_jti_twice(&bench, &outcomes, "cluster").await;
    let ready = bench.guard.admin_get("/readyz").await;
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"ready"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_the_sentinel_keys_from_the_environment_with_passwords_masked() {
    let text = GuardBuilder::new("http://127.0.0.1:9")
        .issuer(&unique_issuer(), "https://portal.example/jwks")
        .toml();
    let file = ConfigFile::new(&text);
    let env = [
        ("HTI_GUARD_REPLAY__STORE", "redis"),
        ("HTI_GUARD_REPLAY__REDIS_MODE", "sentinel"),
        (
            "HTI_GUARD_REPLAY__REDIS_NODES",
            r#"["redis://:hunter2@10.0.0.1:26379/3", "redis://:hunter2@10.0.0.2:26379"]"#,
        ),
        ("HTI_GUARD_REPLAY__SENTINEL_MASTER", "mymaster"),
        ("HTI_GUARD_REPLAY__REDIS_WAIT_REPLICAS", "1"),
    ];
    let mut check = command(&["check", "--config", file.path(), "--offline", "--json"]);
    check.envs(env);
    let report = run(check).await;
    assert_eq!(report.code(), Some(0), "{report}");
    assert!(!report.stdout.contains("hunter2"), "{report}");
    let values = &report.json()["config"]["values"];
    let from_env = |variable: &str, value: serde_json::Value| serde_json::json!({"value": value, "source": "env", "variable": variable});
    assert_eq!(
        values["replay.redis_mode"],
        from_env("HTI_GUARD_REPLAY__REDIS_MODE", "sentinel".into())
    );
    assert_eq!(
        values["replay.redis_nodes"],
        from_env(
            "HTI_GUARD_REPLAY__REDIS_NODES",
            serde_json::json!([
                "redis://:***@10.0.0.1:26379/3",
                "redis://:***@10.0.0.2:26379"
            ])
        )
    );
    assert_eq!(
        values["replay.sentinel_master"],
        from_env("HTI_GUARD_REPLAY__SENTINEL_MASTER", "mymaster".into())
    );
    assert_eq!(
        values["replay.redis_wait_replicas"],
        from_env("HTI_GUARD_REPLAY__REDIS_WAIT_REPLICAS", 1.into())
    );
    assert_eq!(
        values["replay.redis_url"],
        serde_json::json!({"value": null, "source": "default"})
    );

    // Without the master's name the configuration is refused, naming the key.
    let mut check = command(&["check", "--config", file.path(), "--offline"]);
    check.envs(
        env.iter()
            .filter(|(k, _)| !k.ends_with("SENTINEL_MASTER"))
            .copied(),
    );
    let refused = run(check).await;
    refused.assert_error(2, &["replay.sentinel_master"]);
}
