//! A JWKS server for the tests of slow key servers: the first fetch is answered at once,
//! later ones wait at a gate the test opens, so a test can hold a fetch pending for as long
//! as it needs and see what the service does meanwhile.
//!
//! Include it next to the shared harness:
//!
//! ```ignore
//! mod common;
//! #[path = "common/key_server.rs"]
//! mod key_server;
//! ```
#![allow(dead_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tokio::sync::Semaphore;

/// The test key set: `test-ed25519`, `test-rsa` and `test-p256`.
pub const JWKS: &str = include_str!("../fixtures/jwks/jwks.json");
const ED25519: &str = include_str!("../fixtures/jwks/ed25519.pem");
const RSA: &str = include_str!("../fixtures/jwks/rsa.pem");

/// The test key set with only the keys whose `kid` is in `kids`.
pub fn jwks_with(kids: &[&str]) -> String {
    let mut set: Value = serde_json::from_str(JWKS).expect("the fixture is JSON");
    set["keys"]
        .as_array_mut()
        .expect("a keys array")
        .retain(|key| kids.contains(&key["kid"].as_str().unwrap_or_default()));
    set.to_string()
}

/// A token signed by the Ed25519 (`test-ed25519`) or RSA (`test-rsa`, RS256) test key,
/// with `kid` in its header whatever key signed it.
pub fn sign(kid: &str, rsa: bool, claims: &Value) -> String {
    let (algorithm, key) = if rsa {
        (Algorithm::RS256, EncodingKey::from_rsa_pem(RSA.as_bytes()))
    } else {
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED25519.as_bytes()),
        )
    };
    let mut header = Header::new(algorithm);
    header.typ = None;
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.expect("test key")).expect("token")
}

#[derive(Default)]
struct Counters {
    hits: AtomicUsize,
    waiting: AtomicUsize,
    answered: AtomicUsize,
    abandoned: AtomicUsize,
}

/// Counts a fetch as abandoned if its response future is dropped before it answers.
struct Pending(Arc<Counters>, bool);

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub struct GatedKeyServer {
    /// `http://127.0.0.1:<port>`; the key set is at `/api/auth/jwks`, as Better Auth serves it.
    pub origin: String,
    counters: Arc<Counters>,
    gate: Arc<Semaphore>,
    server: tokio::task::JoinHandle<()>,
}

impl GatedKeyServer {
    /// Answers the first fetch with `first` at once, and every later fetch with `later`
    /// once [`GatedKeyServer::open_gate`] is called.
    pub async fn start(first: String, later: String) -> Self {
        let counters = Arc::new(Counters::default());
        let gate = Arc::new(Semaphore::new(0));
        let (first, later): (Arc<str>, Arc<str>) = (first.into(), later.into());
        let (state, gate_for_route) = (counters.clone(), gate.clone());
        let router = Router::new().route(
            "/api/auth/jwks",
            get(move || {
                let (counters, gate) = (state.clone(), gate_for_route.clone());
                let (first, later) = (first.clone(), later.clone());
                async move {
                    let body = if counters.hits.fetch_add(1, Ordering::SeqCst) == 0 {
                        first
                    } else {
                        let mut pending = Pending(counters.clone(), false);
                        counters.waiting.fetch_add(1, Ordering::SeqCst);
                        gate.acquire().await.expect("the gate stays open").forget();
                        pending.1 = true;
                        later
                    };
                    counters.answered.fetch_add(1, Ordering::SeqCst);
                    ([("content-type", "application/json")], body.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            origin,
            counters,
            gate,
            server,
        }
    }

    /// Fetches received, answered or not.
    pub fn hits(&self) -> usize {
        self.counters.hits.load(Ordering::SeqCst)
    }

    /// Fetches answered.
    pub fn answered(&self) -> usize {
        self.counters.answered.load(Ordering::SeqCst)
    }

    /// Fetches whose client gave up before the answer.
    pub fn abandoned(&self) -> usize {
        self.counters.abandoned.load(Ordering::SeqCst)
    }

    /// Waits up to `bound` until `count` fetches wait at the gate.
    pub async fn wait_for_waiting(&self, count: usize, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while self.counters.waiting.load(Ordering::SeqCst) < count {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Lets every fetch waiting now or later through.
    pub fn open_gate(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

impl Drop for GatedKeyServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
