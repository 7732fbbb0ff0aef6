//! Verification of tokens signed by a Better Auth server's JWT plugin, with the public keys
//! of its JWKS.
//!
//! The key set is fetched at start-up and cached. A token whose `kid` is not in the cache
//! triggers one refetch — at most one per [`Settings::jwks_refetch_interval`] however many
//! such tokens arrive, so random `kid`s cannot turn into a flood of fetches. Once the cached
//! set is older than [`Settings::jwks_max_age`], one refresh runs in the background while
//! requests go on verifying with the cached keys: a slow key server delays only the tokens
//! whose key the cache does not have. Each key only verifies the algorithm of its own type
//! (or the `alg` it declares).

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Header, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{JwksSettings, Settings};

/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Key ids longer than this are refused without a lookup.
const MAX_KID_BYTES: usize = 256;

/// Why a JWKS-signed token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum JwksError {
    /// The token does not verify (unknown `kid`, wrong algorithm, bad signature or claims).
    Invalid,
    /// No key set has ever been fetched, so nothing can be verified yet.
    NoKeys,
}

struct VerifyingKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

pub struct JwksVerifier {
    settings: JwksSettings,
    http: reqwest::Client,
    leeway: u64,
    refetch_interval: Duration,
    /// A set older than this is refreshed (in the background), so that keys Better Auth
    /// has dropped stop verifying tokens.
    max_age: Duration,
    keys: RwLock<Arc<HashMap<String, Arc<VerifyingKey>>>>,
    /// When the key set was last fetched successfully; `None` before the first time.
    fetched_at: std::sync::Mutex<Option<Instant>>,
    /// Held while fetching, so that fetches never overlap; holds the time of the last
    /// attempt.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Set while a background refresh is scheduled or running.
    refreshing: AtomicBool,
    fetches: AtomicU64,
    failures: AtomicU64,
}

#[derive(Deserialize)]
struct Subject {
    sub: String,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<Value>,
}

impl JwksVerifier {
    pub fn new(jwks: JwksSettings, settings: &Settings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.jwks_fetch_timeout)
            .connect_timeout(settings.jwks_fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            settings: jwks,
            http,
            leeway: settings.jwt_leeway.as_secs(),
            refetch_interval: settings.jwks_refetch_interval,
            max_age: settings.jwks_max_age,
            keys: RwLock::new(Arc::default()),
            fetched_at: std::sync::Mutex::new(None),
            last_fetch: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// How many times the key set was requested (successfully or not).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many fetches of the key set failed (unreachable, an error status, a bad body).
    pub fn fetch_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Fetches the key set now; a failure is logged and leaves the cache as it was.
    pub async fn refresh(&self) {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch().await;
    }

    /// Verifies a JWKS-signed token; its subject on success. Waits for the network only
    /// when the token's `kid` is not cached.
    pub async fn verify(
        self: &Arc<Self>,
        header: &Header,
        token: &str,
    ) -> Result<String, JwksError> {
        let kid = header
            .kid
            .as_deref()
            .filter(|kid| !kid.is_empty() && kid.len() <= MAX_KID_BYTES)
            .ok_or(JwksError::Invalid)?;
        if self.is_stale() {
            self.refresh_in_background();
        }
        let key = match self.cached(kid) {
            Some(key) => key,
            None => {
                self.refetch_for(kid).await;
                self.cached(kid).ok_or(if self.fetched_at().is_some() {
                    JwksError::Invalid
                } else {
                    JwksError::NoKeys
                })?
            }
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(JwksError::Invalid);
        }
        let mut rules = Validation::new(header.alg);
        rules.algorithms = vec![header.alg];
        rules.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        rules.leeway = self.leeway;
        rules.validate_nbf = true;
        rules.set_issuer(&[&self.settings.issuer]);
        rules.set_audience(&[&self.settings.audience]);
        jsonwebtoken::decode::<Subject>(token, &key.key, &rules)
            .map(|data| data.claims.sub)
            .map_err(|_| JwksError::Invalid)
    }

    fn cached(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.get(kid).cloned()
    }

    fn fetched_at(&self) -> Option<Instant> {
        *self
            .fetched_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the cached set is old enough that keys Better Auth has since dropped (revoked
    /// or past their grace period) should be forgotten.
    fn is_stale(&self) -> bool {
        self.fetched_at()
            .is_some_and(|at| at.elapsed() >= self.max_age)
    }

    /// Starts one refresh of a stale set on a task of its own, unless one is scheduled or
    /// running, a fetch is under way, or the last attempt is more recent than the refetch
    /// interval. The caller does not wait: the cached keys stay in use meanwhile, and if
    /// the fetch fails they stay in use after it (a Better Auth outage logs nobody out).
    fn refresh_in_background(self: &Arc<Self>) {
        let recent = match self.last_fetch.try_lock() {
            Ok(last) => last.is_some_and(|at| at.elapsed() < self.refetch_interval),
            Err(_) => true,
        };
        if recent || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let verifier = Arc::clone(self);
        tokio::spawn(async move {
            {
                let mut last = verifier.last_fetch.lock().await;
                if verifier.is_stale()
                    && !last.is_some_and(|at| at.elapsed() < verifier.refetch_interval)
                {
                    *last = Some(Instant::now());
                    verifier.fetch().await;
                }
            }
            verifier.refreshing.store(false, Ordering::Release);
        });
    }

    /// Refetches for an unknown `kid`, unless another request just did (then the key may now
    /// be cached) or the last attempt is more recent than the refetch interval.
    async fn refetch_for(&self, kid: &str) {
        let mut last = self.last_fetch.lock().await;
        if self.cached(kid).is_some() {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch().await;
    }

    async fn fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.download().await {
            Ok(keys) => {
                tracing::info!(url = %self.settings.url, keys = keys.len(), "fetched the JWKS");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
                *self
                    .fetched_at
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %self.settings.url, error = %format!("{error:#}"), "could not fetch the JWKS");
            }
        }
    }

    async fn download(&self) -> anyhow::Result<HashMap<String, Arc<VerifyingKey>>> {
        let mut response = self
            .http
            .get(self.settings.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?
            .error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            anyhow::ensure!(
                body.len() <= MAX_JWKS_BYTES,
                "the key set is larger than {MAX_JWKS_BYTES} bytes"
            );
        }
        let set: KeySet = serde_json::from_slice(&body)?;
        // A key we cannot use (another curve, an encryption key) is skipped, not fatal.
        Ok(set
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = verifying_key(&jwk)?;
                Some((kid, Arc::new(key)))
            })
            .collect())
    }
}

/// The algorithms a JWK may verify: the one it declares, or those of its key type; `None`
/// for keys we do not accept.
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            &[Algorithm::ES256]
        }
        AlgorithmParameters::RSA(_) => &[Algorithm::RS256, Algorithm::PS256],
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(declared) => {
            let declared = match declared {
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                _ => return None,
            };
            if !by_type.contains(&declared) {
                return None;
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey { key, algorithms })
}
