//! Where sign-up and login attempts are counted: [`AttemptLimits`], kept in the database on
//! PostgreSQL (so every instance shares one budget) and in this process on SQLite (one
//! process per file), by [`MemoryLimits`].
//!
//! Each budget is a generic cell rate algorithm (GCRA, the leaky bucket as a meter): a key
//! holds one number, the time at which its budget is full again (its "theoretical arrival
//! time"). `per_minute` attempts may come at once, and one more every `60 s / per_minute`.
//! Unlike a token bucket this needs no refill job, and unlike a fixed window it allows no
//! double burst at a window's edge; taking and giving back are each one atomic update.
//!
//! The same store remembers keys for a while (the addresses an account logged in from): a
//! remembered key is simply a time further ahead, forgotten by the same sweep.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::StoreError;

/// A budget's key: a SHA-256 digest, so that every key has the same small size whatever the
/// identifier it stands for, and no username, email or address is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LimitKey(pub [u8; 32]);

/// The answer to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Over budget; the next attempt is allowed after this long.
    Refused {
        retry_after: Duration,
    },
}

/// Attempt budgets, `per_minute` for each key.
#[async_trait]
pub trait AttemptLimits: Send + Sync + 'static {
    /// Takes one attempt from `key`'s budget, or refuses it (a refused attempt takes nothing).
    async fn take(&self, key: &LimitKey, per_minute: NonZeroU32) -> Result<Admission, StoreError>;
    /// Returns one attempt taken from `key` (an attempt that, in the end, does not count).
    async fn give_back(&self, key: &LimitKey, per_minute: NonZeroU32) -> Result<(), StoreError>;
    /// Remembers `key` for `ttl` (an address an account logged in from).
    async fn remember(&self, key: &LimitKey, ttl: Duration) -> Result<(), StoreError>;
    /// Whether `key` was remembered less than its `ttl` ago.
    async fn remembers(&self, key: &LimitKey) -> Result<bool, StoreError>;
}

/// The spacing of attempts in a full budget, and how far ahead of now a key's time may run
/// before it refuses (the burst), in milliseconds.
pub(super) fn gcra_parameters(per_minute: NonZeroU32) -> (i64, i64) {
    let interval = 60_000 / i64::from(per_minute.get());
    let interval = interval.max(1);
    (interval, 60_000 - interval)
}

/// Refused attempts wait at least a second (`Retry-After` is in whole seconds).
pub(super) fn refusal(wait_ms: i64) -> Admission {
    Admission::Refused {
        retry_after: Duration::from_millis(wait_ms.max(1000) as u64),
    }
}

/// How many live keys [`MemoryLimits`] holds at most (about 25 MiB). Past that, after a
/// sweep, new keys are refused: under an attack from that many addresses at once, sign-up and
/// login wait rather than memory growing.
const MAX_KEYS: usize = 250_000;

/// How often expired keys are swept, at the latest.
const SWEEP_INTERVAL_MS: i64 = 10_000;

/// How many remembered keys [`MemoryLimits`] holds at most; past that, nothing more is
/// remembered (which only means fewer exemptions from the account-wide budget).
const MAX_REMEMBERED: usize = 100_000;

/// [`AttemptLimits`] in this process's memory, bounded by [`MAX_KEYS`] and
/// [`MAX_REMEMBERED`].
pub struct MemoryLimits {
    started: Instant,
    /// Each key's theoretical arrival time, in milliseconds since `started`.
    keys: Mutex<HashMap<LimitKey, i64>>,
    /// Remembered keys and when they are forgotten, in milliseconds since `started`.
    remembered: Mutex<HashMap<LimitKey, i64>>,
    last_sweep: AtomicI64,
    max_keys: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl MemoryLimits {
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            started: Instant::now(),
            keys: Mutex::new(HashMap::new()),
            remembered: Mutex::new(HashMap::new()),
            last_sweep: AtomicI64::new(0),
            max_keys,
        }
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// How many keys are held now (for tests).
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_at(&self, key: &LimitKey, per_minute: NonZeroU32, now: i64) -> Admission {
        let (interval, burst) = gcra_parameters(per_minute);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let due = now - self.last_sweep.load(Ordering::Relaxed) >= SWEEP_INTERVAL_MS;
        if due || (keys.len() >= self.max_keys && !keys.contains_key(key)) {
            // A key whose time has passed holds a full budget: forgetting it changes nothing.
            keys.retain(|_, arrival| *arrival > now);
            self.last_sweep.store(now, Ordering::Relaxed);
            if keys.len() >= self.max_keys && !keys.contains_key(key) {
                return refusal(SWEEP_INTERVAL_MS);
            }
        }
        let arrival = keys.get(key).copied().unwrap_or(now).max(now);
        if arrival - now > burst {
            return refusal(arrival - now - burst);
        }
        keys.insert(*key, arrival + interval);
        Admission::Allowed
    }
}

#[async_trait]
impl AttemptLimits for MemoryLimits {
    async fn take(&self, key: &LimitKey, per_minute: NonZeroU32) -> Result<Admission, StoreError> {
        Ok(self.take_at(key, per_minute, self.now_ms()))
    }

    async fn give_back(&self, key: &LimitKey, per_minute: NonZeroU32) -> Result<(), StoreError> {
        let (interval, _) = gcra_parameters(per_minute);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(arrival) = keys.get_mut(key) {
            *arrival -= interval;
        }
        Ok(())
    }

    async fn remember(&self, key: &LimitKey, ttl: Duration) -> Result<(), StoreError> {
        let now = self.now_ms();
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, until| *until > now);
        }
        if remembered.len() < MAX_REMEMBERED || remembered.contains_key(key) {
            remembered.insert(*key, now + ttl.as_millis() as i64);
        }
        Ok(())
    }

    async fn remembers(&self, key: &LimitKey) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        Ok(remembered.get(key).is_some_and(|until| *until > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> LimitKey {
        LimitKey([n; 32])
    }

    const THREE: NonZeroU32 = NonZeroU32::new(3).unwrap();

    #[test]
    fn a_budget_allows_its_burst_then_one_attempt_per_interval() {
        let limits = MemoryLimits::default();
        for _ in 0..3 {
            assert_eq!(limits.take_at(&key(1), THREE, 0), Admission::Allowed);
        }
        let Admission::Refused { retry_after } = limits.take_at(&key(1), THREE, 0) else {
            panic!("the fourth attempt at once is refused");
        };
        assert_eq!(retry_after, Duration::from_secs(20));
        // A refusal takes nothing: 20 s later exactly one attempt is back.
        assert_eq!(limits.take_at(&key(1), THREE, 20_000), Admission::Allowed);
        assert!(matches!(
            limits.take_at(&key(1), THREE, 20_000),
            Admission::Refused { .. }
        ));
        // Other keys have budgets of their own.
        assert_eq!(limits.take_at(&key(2), THREE, 0), Admission::Allowed);
    }

    #[tokio::test]
    async fn an_attempt_given_back_can_be_taken_again() {
        let limits = MemoryLimits::default();
        for _ in 0..3 {
            assert_eq!(
                limits.take(&key(1), THREE).await.unwrap(),
                Admission::Allowed
            );
        }
        limits.give_back(&key(1), THREE).await.unwrap();
        assert_eq!(
            limits.take(&key(1), THREE).await.unwrap(),
            Admission::Allowed
        );
        assert!(matches!(
            limits.take(&key(1), THREE).await.unwrap(),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn expired_keys_are_swept_and_live_keys_are_bounded() {
        let limits = MemoryLimits::with_max_keys(100);
        for n in 0..100 {
            assert_eq!(limits.take_at(&key(n), THREE, 0), Admission::Allowed);
        }
        assert_eq!(limits.len(), 100);
        // Full: a new key is refused rather than stored, an existing one still counts.
        assert!(matches!(
            limits.take_at(&key(200), THREE, 1),
            Admission::Refused { .. }
        ));
        assert_eq!(limits.take_at(&key(5), THREE, 1), Admission::Allowed);
        assert_eq!(limits.len(), 100);
        // Once their budgets are full again (20 s for one attempt of three), keys are swept.
        assert_eq!(limits.take_at(&key(200), THREE, 60_000), Admission::Allowed);
        assert_eq!(limits.len(), 1);
    }
}
