//! Rate limits on sign-up and login, per client address and per account, so that password
//! guessing is slow and one client cannot keep bcrypt busy for everyone.

use std::{
    hash::Hash,
    net::IpAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
};

use governor::{
    DefaultKeyedRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};

use crate::{config::Settings, error::ApiError};

/// Forgotten keys are swept after this many checks, so memory stays bounded.
const SWEEP_EVERY: u64 = 4096;

struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `None` when `per_minute` is zero (the limit is off).
    fn per_minute(per_minute: u32) -> Option<Self> {
        NonZeroU32::new(per_minute).map(|n| Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
            checks: AtomicU64::new(0),
        })
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

pub struct AuthRateLimits {
    per_ip: Option<Limiter<IpAddr>>,
    per_account: Option<Limiter<String>>,
}

impl AuthRateLimits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            per_ip: Limiter::per_minute(settings.auth_rate_limit_per_ip),
            per_account: Limiter::per_minute(settings.auth_rate_limit_per_account),
        }
    }

    /// Counts one attempt from `client`; a 429 when it is over its limit.
    pub fn check_client(&self, client: IpAddr) -> Result<(), ApiError> {
        self.per_ip
            .as_ref()
            .map_or(Ok(()), |limiter| limiter.check(&client))
    }

    /// Counts one attempt on `account` (a username or an email, compared without case).
    pub fn check_account(&self, account: &str) -> Result<(), ApiError> {
        self.per_account
            .as_ref()
            .map_or(Ok(()), |limiter| limiter.check(&account.to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_past_the_limit_is_refused_with_a_retry_time() {
        let mut settings = Settings::new("sqlite::memory:");
        settings.auth_rate_limit_per_account = 2;
        let limits = AuthRateLimits::new(&settings);
        assert!(limits.check_account("Alice").is_ok());
        assert!(limits.check_account("alice").is_ok());
        let Err(ApiError::TooManyRequests {
            retry_after_seconds,
        }) = limits.check_account("ALICE")
        else {
            panic!("the third attempt must be refused");
        };
        assert!((1..=60).contains(&retry_after_seconds));
        assert!(limits.check_account("bob").is_ok());
    }

    #[test]
    fn a_zero_limit_is_off() {
        let mut settings = Settings::new("sqlite::memory:");
        settings.auth_rate_limit_per_ip = 0;
        let limits = AuthRateLimits::new(&settings);
        for _ in 0..1000 {
            assert!(limits.check_client(IpAddr::from([127, 0, 0, 1])).is_ok());
        }
    }
}
