//! The listing bodies this instance answered, each with the revision of its owner's tasks it
//! is of (`task_counts.revision`, a new value in the transaction of every write to them).
//!
//! A listing sends the revision of its cached body, if any, in its one statement; when the
//! owner's tasks are still at it, the database does not read the page and the body is
//! answered again, unchanged. So a body is never answered after a write to its tasks has
//! committed, through this instance or any other: the database decides, not a time to live.
//! Only listings whose total comes from the kept totals have a revision (filtered by nothing
//! but `completed`); the others are read every time and never kept.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use quick_cache::{Weighter, sync::Cache};

use super::domain::{ListQuery, SortBy, SortOrder};

/// A kept body, and the revision of the owner's tasks it is of.
#[derive(Clone)]
pub struct Cached {
    pub revision: i64,
    pub body: Bytes,
}

/// What a body depends on, with the revision: the owner, the query's paging and order, and
/// `completed`, the one filter of a kept listing ([`ListQuery::filters_only_completed`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ListingKey {
    owner: String,
    page: u32,
    page_size: u32,
    sort_by: SortBy,
    sort_order: SortOrder,
    completed: Option<bool>,
}

impl ListingKey {
    pub fn new(owner: &str, query: &ListQuery) -> Self {
        Self {
            owner: owner.to_owned(),
            page: query.page,
            page_size: query.page_size,
            sort_by: query.sort_by,
            sort_order: query.sort_order,
            completed: query.completed,
        }
    }
}

/// An entry weighs its body's and its owner's bytes.
#[derive(Clone)]
struct Bytesize;

impl Weighter<ListingKey, Cached> for Bytesize {
    fn weight(&self, key: &ListingKey, value: &Cached) -> u64 {
        (key.owner.len() + value.body.len()) as u64
    }
}

/// Bounded by the bytes it holds (`LISTING_CACHE_MAX_BYTES`); the entries least worth
/// keeping go first (quick_cache's CLOCK-PRO). Off when that bound is 0.
#[derive(Clone)]
pub struct ListingCache {
    entries: Option<Arc<Cache<ListingKey, Cached, Bytesize>>>,
    /// Listings answered with a kept body (`task_listings_from_cache_total` on `/metrics`).
    answered: Arc<AtomicU64>,
}

/// A page of 20 tasks is about 10 KB: the number of entries the cache is sized for at first.
const TYPICAL_ENTRY_BYTES: u64 = 10_000;

impl ListingCache {
    pub fn new(max_bytes: u64) -> Self {
        let entries = (max_bytes > 0).then(|| {
            let items = usize::try_from(max_bytes / TYPICAL_ENTRY_BYTES)
                .unwrap_or(usize::MAX)
                .max(1);
            Arc::new(Cache::with_weighter(items, max_bytes, Bytesize))
        });
        Self {
            entries,
            answered: Arc::default(),
        }
    }

    pub fn get(&self, key: &ListingKey) -> Option<Cached> {
        self.entries.as_ref()?.get(key)
    }

    pub fn insert(&self, key: ListingKey, cached: Cached) {
        if let Some(entries) = &self.entries {
            entries.insert(key, cached);
        }
    }

    /// Counts a listing answered with a kept body.
    pub fn answered_again(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Listings answered with a kept body since start-up.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::domain::PAGE_SIZE_DEFAULT;

    fn query(page: u32) -> ListQuery {
        ListQuery::parse(
            vec![("page".to_owned(), page.to_string())],
            PAGE_SIZE_DEFAULT * 5,
        )
        .unwrap()
    }

    fn cached(revision: i64, bytes: usize) -> Cached {
        Cached {
            revision,
            body: Bytes::from(vec![b' '; bytes]),
        }
    }

    #[test]
    fn a_body_is_kept_per_owner_and_page_and_replaced_by_a_newer_one() {
        let cache = ListingCache::new(1_000_000);
        let alice_1 = ListingKey::new("alice", &query(1));
        cache.insert(alice_1.clone(), cached(7, 100));
        assert_eq!(cache.get(&alice_1).map(|c| c.revision), Some(7));
        assert!(cache.get(&ListingKey::new("bob", &query(1))).is_none());
        assert!(cache.get(&ListingKey::new("alice", &query(2))).is_none());
        cache.insert(alice_1.clone(), cached(9, 100));
        assert_eq!(cache.get(&alice_1).map(|c| c.revision), Some(9));
    }

    #[test]
    fn the_cache_holds_no_more_bytes_than_its_bound_and_none_when_off() {
        let cache = ListingCache::new(10_000);
        for page in 1..=100 {
            cache.insert(ListingKey::new("alice", &query(page)), cached(1, 1_000));
        }
        let kept = (1..=100)
            .filter(|page| {
                cache
                    .get(&ListingKey::new("alice", &query(*page)))
                    .is_some()
            })
            .count();
        assert!(
            (1..=10).contains(&kept),
            "{kept} bodies of 1 000 bytes kept"
        );

        let off = ListingCache::new(0);
        off.insert(ListingKey::new("alice", &query(1)), cached(1, 10));
        assert!(off.get(&ListingKey::new("alice", &query(1))).is_none());
    }
}
