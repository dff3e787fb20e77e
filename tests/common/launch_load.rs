//! A bounded load of launches for the replay store's fault tests: workers alternate a token
//! of a shared pool (each may be accepted once in all) and a fresh one, pausing between
//! launches, and record each outcome with the token's jti.

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
