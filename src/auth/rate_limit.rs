//! Rate limits on sign-up and login: per client address, per (client address, account) pair
//! and per account across all addresses, so that password guessing is slow, one client
//! cannot keep bcrypt busy for everyone, and a stranger cannot lock an owner out.
//!
//! What counts (see the README's "Design decisions"):
//! - every sign-up and login from a client address counts against `AUTH_RATE_LIMIT_PER_IP`;
//! - a sign-up counts against its (address, email) pair;
//! - a login is taken from its (address, account) pair budget (`AUTH_RATE_LIMIT_PER_ACCOUNT`)
//!   and from the account's budget (`AUTH_RATE_LIMIT_PER_ACCOUNT_GLOBAL`) *before* the
//!   password is checked, and given back when the password is right: only failed attempts
//!   count, and a refused attempt costs no bcrypt time;
//! - an address an account logged in from in the last [`KNOWN_ADDRESS_FOR`] is exempt from
//!   the account's budget (not from its pair's), so that guessing from many other addresses
//!   cannot lock the owner out where they usually log in.
//!
//! IPv6 clients are counted per /64 network, the smallest block a subscriber usually gets:
//! otherwise one subscriber would have 2^64 budgets.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::domain::LoginId;
use crate::{
    config::Settings,
    error::ApiError,
    storage::limits::{Admission, AttemptLimits, LimitKey},
};

/// How long an address an account logged in from stays exempt from the account's budget.
pub const KNOWN_ADDRESS_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Which account an attempt is about. An account has one budget whichever identifier names
/// it; an identifier no account has is counted by its canonical form.
#[derive(Clone, Copy, Debug)]
pub enum Account<'a> {
    Id(Uuid),
    Unknown(&'a LoginId),
}

pub struct AuthRateLimits {
    counters: Arc<dyn AttemptLimits>,
    per_ip: Option<NonZeroU32>,
    per_pair: Option<NonZeroU32>,
    per_account: Option<NonZeroU32>,
}

/// A login attempt admitted by the account limits: [`LoginAttempt::give_back`] returns it;
/// dropped otherwise (a wrong password), it keeps counting.
#[must_use]
pub struct LoginAttempt<'a> {
    limits: &'a AuthRateLimits,
    taken: Vec<(LimitKey, NonZeroU32)>,
    /// The (address, account) key remembered on success, when the account's budget is on.
    known: Option<LimitKey>,
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt is given back, and the address is remembered as
    /// one the account logs in from.
    pub async fn succeeded(self) {
        if let Some(known) = &self.known
            && let Err(error) = self
                .limits
                .counters
                .remember(known, KNOWN_ADDRESS_FOR)
                .await
        {
            tracing::warn!(%error, "could not remember the address of a successful login");
        }
        self.give_back().await;
    }

    /// This attempt does not count (the password was right, or was never checked). A
    /// failure to give it back is logged, not the client's problem (the budget refills within
    /// the minute anyway).
    pub async fn give_back(self) {
        for (key, per_minute) in &self.taken {
            if let Err(error) = self.limits.counters.give_back(key, *per_minute).await {
                tracing::warn!(%error, "could not give a successful login's attempt back");
            }
        }
    }
}

impl AuthRateLimits {
    /// The limits `settings` configure, counted in `counters`.
    pub fn new(settings: &Settings, counters: Arc<dyn AttemptLimits>) -> Self {
        let per_pair = settings.auth_rate_limit_per_account;
        let per_account = settings
            .auth_rate_limit_per_account_global
            .unwrap_or(per_pair.saturating_mul(10));
        Self {
            counters,
            per_ip: NonZeroU32::new(settings.auth_rate_limit_per_ip),
            per_pair: NonZeroU32::new(per_pair),
            per_account: NonZeroU32::new(per_account),
        }
    }

    /// Counts one sign-up or login from `client`; a 429 when it is over its limit.
    pub async fn check_client(&self, client: IpAddr) -> Result<(), ApiError> {
        let Some(per_minute) = self.per_ip else {
            return Ok(());
        };
        self.take(&digest(&["client", &address_key(client)]), per_minute)
            .await
    }

    /// Counts one sign-up for `email` (canonical) from `client`.
    pub async fn check_sign_up(&self, client: IpAddr, email: &str) -> Result<(), ApiError> {
        let Some(per_minute) = self.per_pair else {
            return Ok(());
        };
        let account = account_key(Account::Unknown(&LoginId::Email(email.to_owned())));
        self.take(&pair_key(client, &account), per_minute).await
    }

    /// Takes one login attempt on `account` from `client`, from the pair's budget and then
    /// the account's; a 429 (taking nothing) when either is spent.
    pub async fn begin_login(
        &self,
        client: IpAddr,
        account: Account<'_>,
    ) -> Result<LoginAttempt<'_>, ApiError> {
        let existing = matches!(account, Account::Id(_));
        let account = account_key(account);
        let known = (self.per_account.is_some() && existing)
            .then(|| digest(&["known", &address_key(client), &account]));
        let exempt = match &known {
            Some(known) => self.counters.remembers(known).await?,
            None => false,
        };
        let mut attempt = LoginAttempt {
            limits: self,
            taken: Vec::new(),
            known,
        };
        let budgets = [
            self.per_pair.map(|n| (pair_key(client, &account), n)),
            self.per_account
                .filter(|_| !exempt)
                .map(|n| (digest(&["account", &account]), n)),
        ];
        for (key, per_minute) in budgets.into_iter().flatten() {
            if let Err(refused) = self.take(&key, per_minute).await {
                // The attempt does not happen: what it took from the pair goes back.
                attempt.give_back().await;
                return Err(refused);
            }
            attempt.taken.push((key, per_minute));
        }
        Ok(attempt)
    }

    async fn take(&self, key: &LimitKey, per_minute: NonZeroU32) -> Result<(), ApiError> {
        match self.counters.take(key, per_minute).await? {
            Admission::Allowed => Ok(()),
            Admission::Refused { retry_after } => Err(ApiError::TooManyRequests {
                retry_after_seconds: retry_after.as_secs()
                    + u64::from(retry_after.subsec_nanos() > 0),
            }),
        }
    }
}

/// What an account is counted as: its id, or the canonical form of an unknown identifier.
fn account_key(account: Account<'_>) -> String {
    match account {
        Account::Id(id) => format!("id:{id}"),
        Account::Unknown(LoginId::Username(name)) => format!("username:{}", name.to_lowercase()),
        Account::Unknown(LoginId::Email(email)) => format!("email:{email}"),
    }
}

fn pair_key(client: IpAddr, account: &str) -> LimitKey {
    digest(&["pair", &address_key(client), account])
}

/// An IPv4 address as is; an IPv6 address by its /64 network.
fn address_key(client: IpAddr) -> String {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

/// SHA-256 of the parts, each followed by a NUL (which none of them contains), so that
/// different parts never give the same input.
fn digest(parts: &[&str]) -> LimitKey {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    LimitKey(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::limits::MemoryLimits;

    fn limits(per_ip: u32, per_pair: u32, global: Option<u32>) -> AuthRateLimits {
        let mut settings = Settings::new("sqlite::memory:");
        settings.auth_rate_limit_per_ip = per_ip;
        settings.auth_rate_limit_per_account = per_pair;
        settings.auth_rate_limit_per_account_global = global;
        AuthRateLimits::new(&settings, Arc::new(MemoryLimits::default()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn the_attempt_past_the_pair_budget_is_refused_with_a_retry_time() {
        let limits = limits(0, 2, Some(0));
        let alice = Account::Id(Uuid::now_v7());
        for _ in 0..2 {
            drop(limits.begin_login(ip("192.0.2.1"), alice).await.unwrap());
        }
        let Err(ApiError::TooManyRequests {
            retry_after_seconds,
        }) = limits.begin_login(ip("192.0.2.1"), alice).await
        else {
            panic!("the third failed attempt must be refused");
        };
        assert!((1..=60).contains(&retry_after_seconds));
        // Another address has its own budget for the same account.
        assert!(limits.begin_login(ip("192.0.2.2"), alice).await.is_ok());
    }

    #[tokio::test]
    async fn successful_logins_do_not_count() {
        let limits = limits(0, 2, Some(2));
        let alice = Account::Id(Uuid::now_v7());
        for _ in 0..10 {
            let attempt = limits.begin_login(ip("192.0.2.1"), alice).await.unwrap();
            attempt.give_back().await;
        }
    }

    #[tokio::test]
    async fn the_global_budget_caps_one_account_across_addresses() {
        let limits = limits(0, 2, Some(3));
        let alice = Account::Id(Uuid::now_v7());
        for n in 1..=3 {
            drop(
                limits
                    .begin_login(ip(&format!("192.0.2.{n}")), alice)
                    .await
                    .unwrap(),
            );
        }
        assert!(limits.begin_login(ip("192.0.2.9"), alice).await.is_err());
        // Another account is not affected.
        assert!(
            limits
                .begin_login(ip("192.0.2.9"), Account::Id(Uuid::now_v7()))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn an_address_the_account_logged_in_from_is_exempt_from_the_account_budget() {
        let limits = limits(0, 2, Some(3));
        let alice = Account::Id(Uuid::now_v7());
        let home = ip("192.0.2.1");
        limits
            .begin_login(home, alice)
            .await
            .unwrap()
            .succeeded()
            .await;
        for n in 2..=4 {
            drop(
                limits
                    .begin_login(ip(&format!("192.0.2.{n}")), alice)
                    .await
                    .unwrap(),
            );
        }
        assert!(limits.begin_login(ip("192.0.2.9"), alice).await.is_err());
        // Home is still let in, within its own pair budget.
        drop(limits.begin_login(home, alice).await.unwrap());
        drop(limits.begin_login(home, alice).await.unwrap());
        assert!(limits.begin_login(home, alice).await.is_err());
        // Unknown identifiers have no owner to remember.
        let nobody = LoginId::Username("nobody".into());
        limits
            .begin_login(home, Account::Unknown(&nobody))
            .await
            .unwrap()
            .succeeded()
            .await;
    }

    #[tokio::test]
    async fn an_ipv6_client_is_counted_by_its_64_network() {
        let limits = limits(2, 0, Some(0));
        assert!(limits.check_client(ip("2001:db8:1:2::1")).await.is_ok());
        assert!(
            limits
                .check_client(ip("2001:db8:1:2:ffff::9"))
                .await
                .is_ok()
        );
        assert!(limits.check_client(ip("2001:db8:1:2::77")).await.is_err());
        assert!(limits.check_client(ip("2001:db8:1:3::1")).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_identifiers_are_counted_by_their_canonical_form() {
        let limits = limits(0, 1, Some(0));
        let upper = LoginId::Username("ALICE".into());
        let lower = LoginId::Username("alice".into());
        drop(
            limits
                .begin_login(ip("192.0.2.1"), Account::Unknown(&upper))
                .await
                .unwrap(),
        );
        assert!(
            limits
                .begin_login(ip("192.0.2.1"), Account::Unknown(&lower))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_zero_limit_is_off() {
        let limits = limits(0, 0, None);
        let alice = Account::Id(Uuid::now_v7());
        for _ in 0..1000 {
            assert!(limits.check_client(ip("127.0.0.1")).await.is_ok());
            drop(limits.begin_login(ip("127.0.0.1"), alice).await.unwrap());
        }
    }
}
