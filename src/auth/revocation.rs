//! Token revocation for local accounts ("sign out everywhere"), checked without a database
//! round trip per request.
//!
//! Each account has a *token generation* (a counter in `users`), and each token we issue
//! carries the generation it was issued at as its `gen` claim. Signing out, changing the
//! password or deleting the account raises the generation (deletion to `i64::MAX`) and writes
//! a row to `token_revocations` in the same transaction. Every instance keeps the latest
//! revocation per account in memory ([`Revocations`]) and polls that table every
//! [`POLL_INTERVAL`] for rows it has not seen, so a revocation made through any instance holds
//! on all of them within about a second, while verifying a token stays a hash-map look-up.
//!
//! Rows are read in `revision` order. A revision is taken from a one-row counter updated in
//! the revoking transaction, whose row lock orders concurrent revocations by commit, so
//! "revision greater than the last one seen" never skips a row that commits late.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::storage::{Store, StoreError};

/// How often each instance reads revocations made elsewhere.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Revocations older than this can no longer matter to our tokens (the longest lifetime
/// `JWT_EXPIRES_IN_SECONDS` allows is 30 days, plus clock leeway), so they are pruned.
pub const HORIZON: Duration = Duration::from_secs(31 * 24 * 60 * 60);

/// The generation a deleted account is raised to: no token of ours carries it.
pub const DELETED: i64 = i64::MAX;

/// The latest revocation of one account's tokens, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The account id, as tokens carry it in `sub`.
    pub subject: String,
    /// Tokens with a lower `gen` are refused.
    pub generation: i64,
    /// When it happened; tokens without `gen` issued (`iat`) at or before it are refused.
    pub revoked_at: DateTime<Utc>,
    /// Position in the order revocations committed.
    pub revision: i64,
}

#[derive(Clone, Copy)]
struct Revoked {
    generation: i64,
    /// Seconds since the epoch, as `iat` counts.
    revoked_at: i64,
}

/// Every instance's view of the revoked tokens.
pub struct Revocations {
    latest: RwLock<HashMap<String, Revoked>>,
    last_revision: RwLock<i64>,
}

impl Revocations {
    /// Reads every stored revocation; the service does this before it listens.
    pub async fn load(store: &dyn Store) -> Result<Arc<Self>, StoreError> {
        let revocations = Arc::new(Self {
            latest: RwLock::default(),
            last_revision: RwLock::new(0),
        });
        revocations.catch_up(store).await?;
        Ok(revocations)
    }

    /// Whether a token for `subject` issued at generation `generation` (our tokens) or at
    /// `issued_at` seconds (tokens minted elsewhere with the shared secret) is still valid.
    pub fn allows(&self, subject: &str, generation: Option<i64>, issued_at: Option<i64>) -> bool {
        let latest = self
            .latest
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(revoked) = latest.get(subject) else {
            return true;
        };
        match (generation, issued_at) {
            (Some(generation), _) => generation >= revoked.generation,
            (None, Some(issued_at)) => {
                revoked.generation != DELETED && issued_at > revoked.revoked_at
            }
            (None, None) => false,
        }
    }

    /// Takes a revocation into account at once (the instance that made it does not wait
    /// for its next poll).
    pub fn record(&self, revocation: &Revocation) {
        let mut latest = self
            .latest
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = latest.entry(revocation.subject.clone()).or_insert(Revoked {
            generation: i64::MIN,
            revoked_at: i64::MIN,
        });
        entry.generation = entry.generation.max(revocation.generation);
        entry.revoked_at = entry.revoked_at.max(revocation.revoked_at.timestamp());
    }

    /// Reads the revocations committed since the last call.
    pub async fn catch_up(&self, store: &dyn Store) -> Result<(), StoreError> {
        let after = *self
            .last_revision
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let rows = store.revocations_after(after).await?;
        if let Some(last) = rows.iter().map(|row| row.revision).max() {
            for row in &rows {
                self.record(row);
            }
            let mut last_revision = self
                .last_revision
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *last_revision = (*last_revision).max(last);
        }
        Ok(())
    }

    /// Polls the store until the returned task is aborted; prunes expired rows now and then.
    pub fn spawn_sync(self: &Arc<Self>, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        let revocations = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut polls: u64 = 0;
            loop {
                ticker.tick().await;
                polls += 1;
                if let Err(error) = revocations.catch_up(store.as_ref()).await {
                    // The database is away: tokens revoked meanwhile elsewhere are caught up
                    // with as soon as it is back; every other request fails with a 503 anyway.
                    tracing::debug!(%error, "could not read token revocations");
                    continue;
                }
                // About once an hour.
                if polls.is_multiple_of(14_400) {
                    let horizon = Utc::now() - HORIZON;
                    if let Err(error) = store.prune_revocations(horizon).await {
                        tracing::debug!(%error, "could not prune token revocations");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocations() -> Revocations {
        Revocations {
            latest: RwLock::default(),
            last_revision: RwLock::new(0),
        }
    }

    fn revoke(subject: &str, generation: i64, at: i64) -> Revocation {
        Revocation {
            subject: subject.into(),
            generation,
            revoked_at: DateTime::from_timestamp(at, 0).unwrap(),
            revision: 1,
        }
    }

    #[test]
    fn tokens_below_the_generation_are_refused_and_others_untouched() {
        let revocations = revocations();
        assert!(revocations.allows("alice", Some(0), Some(100)));
        revocations.record(&revoke("alice", 1, 100));
        assert!(!revocations.allows("alice", Some(0), Some(99)));
        assert!(revocations.allows("alice", Some(1), Some(101)));
        assert!(revocations.allows("bob", Some(0), Some(99)));
    }

    #[test]
    fn tokens_without_a_generation_are_judged_by_their_issue_time() {
        let revocations = revocations();
        revocations.record(&revoke("alice", 1, 100));
        assert!(!revocations.allows("alice", None, Some(100)));
        assert!(revocations.allows("alice", None, Some(101)));
        assert!(!revocations.allows("alice", None, None));
    }

    #[test]
    fn a_deleted_account_refuses_every_token() {
        let revocations = revocations();
        revocations.record(&revoke("alice", DELETED, 100));
        assert!(!revocations.allows("alice", Some(i64::MAX - 1), Some(200)));
        assert!(!revocations.allows("alice", None, Some(200)));
    }

    #[test]
    fn an_older_revocation_read_late_does_not_lower_the_generation() {
        let revocations = revocations();
        revocations.record(&revoke("alice", 3, 300));
        revocations.record(&revoke("alice", 2, 200));
        assert!(!revocations.allows("alice", Some(2), None));
        assert!(revocations.allows("alice", Some(3), None));
    }
}
