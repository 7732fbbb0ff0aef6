//! Password hashing with bcrypt, off the async executor and bounded in concurrency so that a
//! flood of logins queues instead of occupying every core.

use std::sync::Arc;

use tokio::sync::{OnceCell, Semaphore};

use super::domain::{PASSWORD_MAX_BYTES, Password};
use crate::error::ApiError;

#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    permits: Arc<Semaphore>,
    /// A hash of nothing anyone knows, verified against when a login names no account, so
    /// that an unknown user takes as long as a wrong password.
    dummy_hash: Arc<OnceCell<String>>,
}

impl PasswordHasher {
    pub fn new(cost: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            cost,
            permits: Arc::new(Semaphore::new(cores)),
            dummy_hash: Arc::new(OnceCell::new()),
        }
    }

    pub async fn hash(&self, password: &Password) -> Result<String, ApiError> {
        let password = password.expose().to_owned();
        let cost = self.cost;
        self.run(move || bcrypt::hash(password, cost)).await
    }

    /// `true` when `password` matches `hash`. A password over 72 bytes never matches: bcrypt
    /// would otherwise compare only its first 72 bytes.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, ApiError> {
        if password.len() > PASSWORD_MAX_BYTES {
            return Ok(false);
        }
        let password = password.to_owned();
        let hash = hash.to_owned();
        self.run(move || Ok(bcrypt::verify(password, &hash).unwrap_or(false)))
            .await
    }

    /// Spends the time of a verification, for a login that names no account.
    pub async fn verify_nothing(&self, password: &str) -> Result<(), ApiError> {
        let dummy = self
            .dummy_hash
            .get_or_try_init(|| async {
                let cost = self.cost;
                let secret: [u8; 16] = rand::random();
                self.run(move || bcrypt::hash(secret, cost)).await
            })
            .await?;
        self.verify(password, dummy).await.map(drop)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }
}
