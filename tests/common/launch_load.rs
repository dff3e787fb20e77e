//! A bounded load of launches for the replay store's fault tests: workers alternate a token
//! of a shared pool (each may be accepted once in all) and a fresh one, pausing between
//! launches, and record each outcome with the token's jti.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::guard::{outcome, post_form, within};
use super::mint;

/// Makes a fresh launch token.
pub type Mint = Arc<dyn Fn() -> String + Send + Sync>;

/// The jti of a token (its payload read without checking).
pub fn jti_of(token: &str) -> String {
    mint::payload_of(token)["jti"]
        .as_str()
        .expect("a jti")
        .to_string()
}

/// The running load; [`LaunchLoad::finish`] stops it and gives every (jti, outcome).
pub struct LaunchLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<(String, String)>>>,
}

impl LaunchLoad {
    /// `count` tasks POSTing launches to `url`, a pool token and a fresh one in turn.
    pub fn start(
        client: &reqwest::Client,
        url: &str,
        pool: &Arc<Vec<String>>,
        mint: &Mint,
        count: usize,
        pause: Duration,
    ) -> LaunchLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..count)
            .map(|worker| {
                let (client, url, pool, mint) =
                    (client.clone(), url.to_string(), pool.clone(), mint.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    let mut n = worker;
                    while !stop.load(Ordering::SeqCst) {
                        let token = if n % 2 == 0 {
                            pool[(n / 2) % pool.len()].clone()
                        } else {
                            mint()
                        };
                        let response = post_form(&client, &url, &[("token", &token)]).await;
                        outcomes.push((jti_of(&token), outcome(response).await));
                        n += count;
                        tokio::time::sleep(pause).await;
                    }
                    outcomes
                })
            })
            .collect();
        LaunchLoad { stop, workers }
    }

    /// Stop the workers (each within `limit`) and give what they recorded.
    pub async fn finish(self, limit: Duration) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        let mut outcomes = Vec::new();
        for worker in self.workers {
            outcomes.extend(
                within(limit, "a load worker", worker)
                    .await
                    .expect("a worker"),
            );
        }
        outcomes
    }
}

/// What a load that met an outage of the replay store recorded, counted.
pub struct Outcomes {
    pub accepted: usize,
    pub replayed: usize,
    pub unavailable: usize,
    /// The jtis whose launch was accepted.
    pub accepted_jtis: HashSet<String>,
}

impl Outcomes {
    /// Count `outcomes` and check what must hold after an outage: only accepted, replayed
    /// and 503; the load met the outage (at least one 503); no jti reached the upstream
    /// twice (`seen`: its requests per jti); each accepted jti once, and no jti was
    /// accepted twice.
    pub fn no_jti_twice(
        outcomes: &[(String, String)],
        seen: &HashMap<String, usize>,
        what: &str,
    ) -> Outcomes {
        let count = |o: &str| outcomes.iter().filter(|(_, x)| x == o).count();
        let (accepted, replayed, unavailable) = (
            count("accepted"),
            count("replayed"),
            count("replay_store_unavailable"),
        );
        eprintln!(
            "{what}: {} launches under load: {accepted} accepted, {replayed} replayed, \
             {unavailable} 503",
            outcomes.len()
        );
        assert_eq!(
            accepted + replayed + unavailable,
            outcomes.len(),
            "only these outcomes: {outcomes:?}"
        );
        assert!(unavailable >= 1, "{what}: the load met the outage");
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "jtis the upstream received twice: {twice:?}"
        );
        let accepted_jtis: HashSet<String> = outcomes
            .iter()
            .filter(|(_, o)| o == "accepted")
            .map(|(jti, _)| jti.clone())
            .collect();
        assert_eq!(accepted_jtis.len(), accepted, "no jti accepted twice");
        for jti in &accepted_jtis {
            assert_eq!(
                seen.get(jti),
                Some(&1),
                "accepted {jti} reached the upstream once"
            );
        }
        Outcomes {
            accepted,
            replayed,
            unavailable,
            accepted_jtis,
        }
    }
}
