//! Password hashing with bcrypt, off the async executor and bounded twice: at most
//! `password_hash_concurrency` hashes run at once (by default one core fewer than the
//! machine has, so the task routes keep a core during a login flood), and at most
//! `password_hash_queue` wait; past that, sign-up and login get a 503 at once instead of
//! queueing without end.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::domain::{PASSWORD_MAX_BYTES, Password};
use crate::error::ApiError;

#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// Hashes running or waiting.
    admitted: Arc<Semaphore>,
    /// Hashes running.
    running: Arc<Semaphore>,
    /// The sizes of the two semaphores, for [`PasswordHasher::queue_depth`].
    admitted_capacity: usize,
    running_capacity: usize,
    /// A hash of nothing anyone knows, verified against when a login names no account, so
    /// that an unknown user takes as long as a wrong password — from the very first login,
    /// which is why it is made at start-up.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub async fn start(cost: u32, concurrency: usize, queue: usize) -> anyhow::Result<Self> {
        let secret: [u8; 16] = rand::random();
        let dummy_hash = tokio::task::spawn_blocking(move || bcrypt::hash(secret, cost)).await??;
        Ok(Self {
            cost,
            admitted: Arc::new(Semaphore::new(concurrency + queue)),
            running: Arc::new(Semaphore::new(concurrency)),
            admitted_capacity: concurrency + queue,
            running_capacity: concurrency,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// A 503 at once when no more hashes may wait, so that an overloaded sign-up or login
    /// is refused before it costs a database query.
    pub fn ensure_capacity(&self) -> Result<(), ApiError> {
        if self.admitted.available_permits() == 0 {
            Err(ApiError::Overloaded)
        } else {
            Ok(())
        }
    }

    /// Hashes admitted and waiting for a hashing thread (not those running).
    pub fn queue_depth(&self) -> usize {
        let admitted = self.admitted_capacity - self.admitted.available_permits();
        let running = self.running_capacity - self.running.available_permits();
        admitted.saturating_sub(running)
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
        self.verify(password, &self.dummy_hash).await.map(drop)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _admitted = self
            .admitted
            .try_acquire()
            .map_err(|_| ApiError::Overloaded)?;
        let _running = self.running.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }
}
