//! The listing cache. Each instance keeps the bodies of its listings that filter on nothing
//! but `completed` (any page, page size and order) in a bounded in-memory cache, and answers
//! one again only while the owner's task set in the database is still at the revision the
//! body was cached at. What a user sees: an answer from the cache is byte for byte the answer
//! a fresh listing gives; every write that got its 2xx, through this instance or another on
//! the same database, shows in the next listing; a refused write changes nothing; listings
//! with any other filter are never answered from the cache; each page, order, `completed`
//! value and owner has an entry of its own; and `LISTING_CACHE_MAX_BYTES=0`, or a cache too
//! small for a page, only makes every listing fresh. `task_listings_from_cache_total` on
//! `/metrics` counts the listings an instance answered from its cache.

mod common;

use common::*;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use todo_api::{Settings, config::Secret};

const METRICS_TOKEN: &str = "metrics-token-of-the-listing-cache-tests";

/// The documented default of `LISTING_CACHE_MAX_BYTES`: 16 MiB.
const DEFAULT_MAX_BYTES: u64 = 16_777_216;

/// The listings that filter on nothing but `completed`, each different from every other, so
/// that each has a cache entry of its own (the first listing of each is not a hit).
const DISTINCT: [&str; 14] = [
    "",
    "completed=true",
    "completed=false",
    "page_size=2",
    "page=2&page_size=2",
    "page=3&page_size=2",
    "page=9",
    "sort_by=title",
    "sort_by=title&sort_order=asc",
    "sort_order=asc",
    "sort_by=updated_at",
    "sort_by=completed&page_size=3",
    "sort_by=due_at",
    "sort_by=priority&sort_order=asc",
];

/// Listings with a filter other than `completed`, and the titles each finds among the
/// seeded tasks ([`seed`]).
const FILTERED: [(&str, &[&str]); 11] = [
    ("q=milk", &["buy milk", "plan the trip"]),
    ("priority=high", &["buy milk", "ship the release"]),
    (
        "priority=low&priority=urgent",
        &["pay rent", "write report"],
    ),
    ("tag=home", &["buy milk", "pay rent"]),
    ("tag=home&tag=money", &["pay rent"]),
    ("due_after=2030-01-01T00:00:00Z", &["pay rent"]),
    (
        "due_before=2030-01-01T00:00:00Z",
        &["buy milk", "plan the trip", "ship the release"],
    ),
    ("overdue=true", &["buy milk"]),
    (
        "overdue=false",
        &[
            "pay rent",
            "plan the trip",
            "ship the release",
            "write report",
        ],
    ),
    ("completed=false&tag=work", &["write report"]),
    ("completed=true&q=milk", &["plan the trip"]),
];

#[test]
fn the_cache_holds_16_mib_by_default_and_0_turns_it_off() {
    let defaults = Settings::from_lookup(|_| None).expect("the defaults");
    assert_eq!(defaults.listing_cache_max_bytes, DEFAULT_MAX_BYTES);
    let off =
        Settings::from_lookup(|name| (name == "LISTING_CACHE_MAX_BYTES").then_some("0".to_owned()))
            .expect("LISTING_CACHE_MAX_BYTES=0 is accepted");
    assert_eq!(off.listing_cache_max_bytes, 0);
}

on_both_backends! {
    /// The same listing asked again is answered from the cache: the counter goes up by one
    /// per repeat, and the answer is the first one, Content-Type and bytes, which is also
    /// what an instance without a cache answers.
    async fn a_repeated_listing_is_answered_from_the_cache_byte_for_byte(backend: Backend) {
        let app = caching_instance(backend).await;
        let reference = another_instance(&app, 0).await;
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;

        for query in ["", "page=2&page_size=2&sort_by=title&sort_order=asc", "completed=false"] {
            let hits = from_cache(&app).await;
            let first = list(&app, &alice, query).await;
            assert_eq!(from_cache(&app).await, hits, "?{query} listed the first time");
            assert!(first.content_type.starts_with("application/json"), "{first:?}");
            assert_eq!(first, list(&reference, &alice, query).await, "?{query}: a fresh listing");
            for repeat in 1..=3 {
                let again = list(&app, &alice, query).await;
                assert_eq!(
                    from_cache(&app).await,
                    hits + repeat,
                    "?{query}, repeat {repeat}: answered from the cache"
                );
                assert_eq!(again, first, "?{query}, repeat {repeat}: the first answer again");
            }
        }
        assert_eq!(from_cache(&reference).await, 0, "the instance without a cache");
    }
}

on_both_backends! {
    /// Each kind of write, between a listing answered from the cache and the next one: the
    /// next one is fresh, shows the write, and is what an instance without a cache answers.
    /// A refused write (412, 404, 400) changes nothing: the next listing is still answered
    /// from the cache, and is still right.
    async fn every_write_shows_in_the_next_listing_and_a_refused_one_keeps_the_cache(backend: Backend) {
        let app = caching_instance(backend).await;
        let reference = another_instance(&app, 0).await;
        let alice = app.signup("alice").await;
        let watch = Watch { cached: &app, reference: &reference, user: &alice };
        let tasks = TestApp::tasks_path(&alice);
        let token = &alice.token;

        // From no tasks at all to the first one. (Whether the listing of an owner who never
        // had a task is answered from the cache is not asked.)
        let before = watch.listed().await;
        let report = watch
            .write_after(
                "the first create",
                &before,
                app.authed(Method::POST, &tasks, token)
                    .json(&json!({"title": "write the report", "tags": ["work"]})),
                StatusCode::CREATED,
            )
            .await;
        let report = TestApp::task_path(&alice, id_of(&report));
        let taxes = watch
            .write(
                "a create of a completed task",
                app.authed(Method::POST, &tasks, token)
                    .json(&json!({"title": "file the taxes", "completed": true})),
                StatusCode::CREATED,
            )
            .await;
        let taxes = TestApp::task_path(&alice, id_of(&taxes));
        watch
            .write(
                "a PUT",
                app.authed(Method::PUT, &report, token).json(&json!({
                    "title": "rewrite the report",
                    "description": "second draft",
                    "completed": false,
                    "priority": "high",
                    "tags": ["work"],
                })),
                StatusCode::OK,
            )
            .await;
        watch
            .write(
                "a PATCH of the title",
                app.authed(Method::PATCH, &taxes, token)
                    .json(&json!({"title": "file the taxes early"})),
                StatusCode::OK,
            )
            .await;
        watch
            .write(
                "a PATCH of the tags",
                app.authed(Method::PATCH, &report, token)
                    .json(&json!({"tags": ["work", "writing"]})),
                StatusCode::OK,
            )
            .await;
        let completed = watch
            .write(
                "PATCH …/complete without a body (completes)",
                app.authed(Method::PATCH, &format!("{report}/complete"), token),
                StatusCode::OK,
            )
            .await;
        assert_eq!(completed["completed"], true, "{completed}");
        let reopened = watch
            .write(
                "PATCH …/complete with completed false (reopens)",
                app.authed(Method::PATCH, &format!("{report}/complete"), token)
                    .json(&json!({"completed": false})),
                StatusCode::OK,
            )
            .await;
        assert_eq!(reopened["completed"], false, "{reopened}");

        let weekly = watch
            .write(
                "a create of a recurring task",
                app.authed(Method::POST, &tasks, token).json(&json!({
                    "title": "water the plants",
                    "due_at": "2030-01-07T09:00:00.000Z",
                    "recurrence": {"frequency": "weekly"},
                })),
                StatusCode::CREATED,
            )
            .await;
        let before = list(&app, &alice, "").await.json();
        let weekly = watch
            .write(
                "the completion of a recurring task",
                app.authed(
                    Method::PATCH,
                    &format!("{}/complete", TestApp::task_path(&alice, id_of(&weekly))),
                    token,
                ),
                StatusCode::OK,
            )
            .await;
        let next = weekly["next_task_id"].as_str().expect("a next occurrence");
        let after = list(&app, &alice, "").await.json();
        assert_eq!(after["total"], before["total"].as_u64().unwrap() + 1, "{after}");
        assert!(ids_of(&after).contains(&next.to_owned()), "the next occurrence is listed: {after}");

        watch
            .write("a DELETE", app.authed(Method::DELETE, &taxes, token), StatusCode::OK)
            .await;

        // Writes that change nothing.
        watch
            .refused(
                "a PATCH with a stale If-Match",
                app.authed(Method::PATCH, &report, token)
                    .header("If-Match", "\"999\"")
                    .json(&json!({"title": "never written"})),
                StatusCode::PRECONDITION_FAILED,
            )
            .await;
        watch
            .refused(
                "a DELETE of a task that is not there",
                app.authed(
                    Method::DELETE,
                    &TestApp::task_path(&alice, &uuid::Uuid::new_v4().to_string()),
                    token,
                ),
                StatusCode::NOT_FOUND,
            )
            .await;
        watch
            .refused(
                "a PATCH with an empty body",
                app.authed(Method::PATCH, &report, token).json(&json!({})),
                StatusCode::BAD_REQUEST,
            )
            .await;
        watch
            .refused(
                "a PUT without `completed`",
                app.authed(Method::PUT, &report, token)
                    .json(&json!({"title": "never written", "description": null})),
                StatusCode::BAD_REQUEST,
            )
            .await;
        watch
            .refused(
                "a create with an empty title",
                app.authed(Method::POST, &tasks, token).json(&json!({"title": ""})),
                StatusCode::BAD_REQUEST,
            )
            .await;

        // Down to no tasks again, one DELETE at a time.
        for id in ids_of(&list(&app, &alice, "").await.json()) {
            watch
                .write(
                    "a DELETE down to no tasks",
                    app.authed(Method::DELETE, &TestApp::task_path(&alice, &id), token),
                    StatusCode::OK,
                )
                .await;
        }
        let empty = list(&app, &alice, "").await.json();
        assert_eq!(empty["total"], 0, "{empty}");
        assert_eq!(from_cache(&reference).await, 0, "the instance without a cache");
    }
}

on_both_backends! {
    /// Two instances with their caches, one database: A's listing is cached, B writes, and
    /// A's next listing shows B's write (A does not answer it from its cache); and the other
    /// way round.
    async fn a_write_through_another_instance_shows_in_the_next_listing(backend: Backend) {
        let a = caching_instance(backend).await;
        let b = another_instance(&a, DEFAULT_MAX_BYTES).await;
        let alice = a.signup("alice").await;
        let first = a.create_task(&alice, json!({"title": "written through A"})).await;
        let first = TestApp::task_path(&alice, id_of(&first));

        for query in ["", "completed=false"] {
            let cached = listed_twice(&a, &alice, query, "before B's create").await;
            let created = b.create_task(&alice, json!({"title": format!("B's create ?{query}")})).await;
            assert_shows(&a, &b, &alice, query, &cached, "B's create").await;
            assert!(
                ids_of(&list(&a, &alice, query).await.json()).contains(&id_of(&created).to_owned()),
                "?{query}: B's task listed through A"
            );
        }

        let cached = listed_twice(&a, &alice, "", "before B's PATCH").await;
        send(
            b.authed(Method::PATCH, &first, &alice.token).json(&json!({"title": "renamed by B"})),
            StatusCode::OK,
            "B's PATCH",
        )
        .await;
        assert_shows(&a, &b, &alice, "", &cached, "B's PATCH").await;

        let cached = listed_twice(&a, &alice, "completed=true", "before B's completion").await;
        send(
            b.authed(Method::PATCH, &format!("{first}/complete"), &alice.token),
            StatusCode::OK,
            "B's completion",
        )
        .await;
        assert_shows(&a, &b, &alice, "completed=true", &cached, "B's completion").await;

        let cached = listed_twice(&a, &alice, "", "before B's DELETE").await;
        send(b.authed(Method::DELETE, &first, &alice.token), StatusCode::OK, "B's DELETE").await;
        assert_shows(&a, &b, &alice, "", &cached, "B's DELETE").await;

        // And the other way round: B's listing cached, A writes.
        let cached = listed_twice(&b, &alice, "", "before A's create").await;
        a.create_task(&alice, json!({"title": "written through A again"})).await;
        assert_shows(&b, &a, &alice, "", &cached, "A's create").await;
    }
}

on_both_backends! {
    /// Listings with `q`, `priority`, `tag`, `due_after`, `due_before` or `overdue` are never
    /// answered from the cache, however often they are repeated, and find what they should,
    /// before and after a write.
    async fn filtered_listings_are_never_answered_from_the_cache(backend: Backend) {
        let app = caching_instance(backend).await;
        let reference = another_instance(&app, 0).await;
        let alice = app.signup("alice").await;
        let seeded = seed(&app, &alice).await;
        // The same pages without the filters are in the cache, as a filtered listing may
        // well find them.
        let unfiltered = ["", "completed=true", "completed=false"];
        let mut cached = Vec::new();
        for query in unfiltered {
            cached.push(listed_twice(&app, &alice, query, "unfiltered").await);
        }

        let hits = from_cache(&app).await;
        for (query, expected) in FILTERED {
            let first = list(&app, &alice, query).await;
            assert_eq!(titles(&first), sorted(expected), "?{query}");
            assert_eq!(first, list(&reference, &alice, query).await, "?{query}: a fresh listing");
            for repeat in 1..=2 {
                assert_eq!(list(&app, &alice, query).await, first, "?{query}, repeat {repeat}");
            }
        }
        assert_eq!(from_cache(&app).await, hits, "no filtered listing answered from the cache");
        // Nor did one take the place of the unfiltered page.
        for (query, cached) in unfiltered.iter().zip(&cached) {
            assert_eq!(&listed_twice(&app, &alice, query, "after the filtered").await, cached);
        }
        let hits = from_cache(&app).await;

        // "buy milk" is no longer high, nor at home.
        let milk = TestApp::task_path(&alice, id_of(&seeded[0]));
        send(
            app.authed(Method::PATCH, &milk, &alice.token)
                .json(&json!({"priority": "low", "tags": ["shop"]})),
            StatusCode::OK,
            "a PATCH of priority and tags",
        )
        .await;
        for (query, _) in FILTERED {
            let answer = list(&app, &alice, query).await;
            assert_eq!(answer, list(&reference, &alice, query).await, "after the PATCH: ?{query}");
        }
        assert_eq!(titles(&list(&app, &alice, "priority=high").await), ["ship the release"]);
        assert_eq!(titles(&list(&app, &alice, "tag=home").await), ["pay rent"]);
        assert_eq!(from_cache(&app).await, hits, "no filtered listing answered from the cache");
    }
}

on_both_backends! {
    /// `completed=true`, `completed=false` and every page, page size, sort column and order
    /// have a cache entry of their own: the first listing of each is not answered from the
    /// cache (not with another's bytes), and each repeat is, with its own first answer.
    async fn each_page_order_and_completed_value_is_cached_apart(backend: Backend) {
        let app = caching_instance(backend).await;
        let reference = another_instance(&app, 0).await;
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;

        let mut firsts = Vec::new();
        for query in DISTINCT {
            let hits = from_cache(&app).await;
            let first = list(&app, &alice, query).await;
            assert_eq!(from_cache(&app).await, hits, "?{query} listed the first time");
            assert_eq!(first, list(&reference, &alice, query).await, "?{query}: a fresh listing");
            firsts.push(first);
        }
        for (query, first) in DISTINCT.iter().zip(&firsts) {
            let hits = from_cache(&app).await;
            assert_eq!(&list(&app, &alice, query).await, first, "?{query} again");
            assert_eq!(from_cache(&app).await, hits + 1, "?{query} again: from the cache");
        }

        let answer = |query: &str| {
            let at = DISTINCT.iter().position(|q| *q == query).unwrap();
            firsts[at].json()
        };
        assert_ne!(answer("page_size=2")["items"], answer("page=2&page_size=2")["items"]);
        assert_eq!(answer("page=2&page_size=2")["page"], 2);
        assert_eq!(answer("page=9")["items"], json!([]), "a page past the end");
        assert_eq!(answer("page=9")["total"], 5);
        assert_eq!(
            titles(&firsts[1]),
            sorted(&["plan the trip", "ship the release"]),
            "completed=true"
        );
        assert_eq!(
            titles(&firsts[2]),
            sorted(&["buy milk", "pay rent", "write report"]),
            "completed=false"
        );
    }
}

on_both_backends! {
    /// Two owners listing with the same query each get their own tasks, never the other's
    /// cached bytes; an owner without a task gets an empty page after another's was cached;
    /// and one owner's write leaves another's listing cached.
    async fn each_owner_gets_their_own_tasks(backend: Backend) {
        let app = caching_instance(backend).await;
        let reference = another_instance(&app, 0).await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let carol = app.signup("carol").await;
        seed(&app, &alice).await;
        app.create_task(&bob, json!({"title": "bob's open task"})).await;
        app.create_task(&bob, json!({"title": "bob's done task", "completed": true})).await;

        for query in ["", "completed=false", "page_size=1"] {
            let alices = listed_twice(&app, &alice, query, "alice").await;

            let hits = from_cache(&app).await;
            let bobs = list(&app, &bob, query).await;
            assert_eq!(from_cache(&app).await, hits, "?{query}: bob's first listing");
            assert_ne!(bobs, alices, "?{query}: bob's listing");
            assert_eq!(bobs, list(&reference, &bob, query).await, "?{query}: bob's, fresh");
            assert_owned_by(&bobs, &bob);
            assert_eq!(listed_twice(&app, &bob, query, "bob").await, bobs);

            for repeat in 0..2 {
                let carols = list(&app, &carol, query).await;
                assert_eq!(carols, list(&reference, &carol, query).await, "?{query}: carol's");
                let page = carols.json();
                assert_eq!(page["items"], json!([]), "?{query}, {repeat}: carol's {page}");
                assert_eq!(page["total"], 0, "?{query}: carol's {page}");
                assert_eq!(page["total_pages"], 0, "?{query}: carol's {page}");
            }
        }
        assert_eq!(
            titles(&list(&app, &bob, "").await),
            sorted(&["bob's done task", "bob's open task"])
        );

        // Bob's write is no write to alice's tasks.
        let alices = listed_twice(&app, &alice, "", "alice, before bob's create").await;
        app.create_task(&bob, json!({"title": "bob's third task"})).await;
        let hits = from_cache(&app).await;
        assert_eq!(list(&app, &alice, "").await, alices, "alice's, after bob's create");
        assert_eq!(from_cache(&app).await, hits + 1, "alice's, after bob's create: from the cache");
        assert_eq!(list(&app, &bob, "").await, list(&reference, &bob, "").await, "bob's");

        // Carol's first task.
        let task = app.create_task(&carol, json!({"title": "carol's first task"})).await;
        let carols = list(&app, &carol, "").await;
        assert_eq!(carols, list(&reference, &carol, "").await, "carol's, after her create");
        assert_eq!(ids_of(&carols.json()), [id_of(&task).to_owned()]);
    }
}

on_both_backends! {
    /// `listing_cache_max_bytes = 0`: nothing is answered from the cache, and every listing
    /// is right, repeated or after a write.
    async fn with_the_cache_off_no_listing_is_answered_from_it(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            with_metrics(settings);
            settings.listing_cache_max_bytes = 0;
        })
        .await;
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;
        let all = sorted(&["buy milk", "pay rent", "plan the trip", "ship the release", "write report"]);

        for query in DISTINCT {
            let first = list(&app, &alice, query).await;
            for _ in 0..2 {
                assert_eq!(list(&app, &alice, query).await, first, "?{query} again");
            }
        }
        assert_eq!(titles(&list(&app, &alice, "").await), all);
        assert_eq!(
            titles(&list(&app, &alice, "completed=true").await),
            sorted(&["plan the trip", "ship the release"])
        );

        app.create_task(&alice, json!({"title": "one more"})).await;
        let page = list(&app, &alice, "").await;
        assert_eq!(page.json()["total"], 6, "{page:?}");
        assert_eq!(page.json()["items"][0]["title"], "one more", "newest first: {page:?}");
        assert_eq!(from_cache(&app).await, 0, "nothing answered from a cache that is off");
    }
}

on_both_backends! {
    /// A cache smaller than any page (1 byte), or one that holds only a page or two (4 KiB,
    /// so that entries are evicted as other listings come): every listing is still right,
    /// repeated, among other listings, and after writes. Whether any is answered from the
    /// cache is not asked.
    async fn a_cache_too_small_for_the_listings_still_answers_right(backend: Backend) {
        for max_bytes in [1, 4_096] {
            let app = TestApp::spawn_with(backend, |settings| {
                with_metrics(settings);
                settings.listing_cache_max_bytes = max_bytes;
            })
            .await;
            let reference = another_instance(&app, 0).await;
            let alice = app.signup("alice").await;
            let seeded = seed(&app, &alice).await;

            for (round, toggled) in seeded.iter().take(3).enumerate() {
                for query in DISTINCT {
                    for _ in 0..2 {
                        assert_eq!(
                            list(&app, &alice, query).await,
                            list(&reference, &alice, query).await,
                            "{max_bytes} bytes, round {round}: ?{query}"
                        );
                    }
                }
                app.create_task(&alice, json!({"title": format!("round {round}")})).await;
                let path = TestApp::task_path(&alice, id_of(toggled));
                send(
                    app.authed(Method::PATCH, &format!("{path}/complete"), &alice.token),
                    StatusCode::OK,
                    "a toggle",
                )
                .await;
            }
            let page = list(&app, &alice, "page_size=100").await.json();
            assert_eq!(page["total"], 8, "{max_bytes} bytes: {page}");
        }
    }
}

/// Lists one owner's tasks through a caching instance around writes, and compares with the
/// same listings through an instance without a cache on the same database.
struct Watch<'a> {
    cached: &'a TestApp,
    reference: &'a TestApp,
    user: &'a TestUser,
}

/// The listings [`Watch`] looks at: the default one, and open tasks by title, two a page.
const WATCHED: [&str; 2] = [
    "",
    "completed=false&sort_by=title&sort_order=asc&page_size=2",
];

impl Watch<'_> {
    /// Makes sure the watched listings are in the cache: listed again, each is answered
    /// from it. Returns them.
    async fn cache(&self, what: &str) -> Vec<Answer> {
        let mut answers = Vec::new();
        for query in WATCHED {
            let when = format!("before {what}");
            answers.push(listed_twice(self.cached, self.user, query, &when).await);
        }
        answers
    }

    /// Sends `request`, a write that must succeed with `status`, between cached listings;
    /// asserts that the listings after it are fresh and right (the default one changed).
    /// Returns the write's answer.
    async fn write(&self, what: &str, request: RequestBuilder, status: StatusCode) -> Value {
        let before = self.cache(what).await;
        self.write_after(what, &before, request, status).await
    }

    /// The watched listings, each listed twice with the same answer, from the cache or not.
    async fn listed(&self) -> Vec<Answer> {
        let mut answers = Vec::new();
        for query in WATCHED {
            let first = list(self.cached, self.user, query).await;
            assert_eq!(
                list(self.cached, self.user, query).await,
                first,
                "?{query} again"
            );
            answers.push(first);
        }
        answers
    }

    /// [`Watch::write`] after the watched listings were `before`.
    async fn write_after(
        &self,
        what: &str,
        before: &[Answer],
        request: RequestBuilder,
        status: StatusCode,
    ) -> Value {
        let answer = send(request, status, what).await;
        let hits = from_cache(self.cached).await;
        for (query, before) in WATCHED.iter().zip(before) {
            let after = list(self.cached, self.user, query).await;
            let fresh = list(self.reference, self.user, query).await;
            assert_eq!(
                after, fresh,
                "after {what}: ?{query}, cached instance and uncached one"
            );
            if query.is_empty() {
                assert_ne!(&after, before, "after {what}: the listing shows it");
            }
        }
        assert_eq!(
            from_cache(self.cached).await,
            hits,
            "after {what}: no listing answered from the cache"
        );
        answer
    }

    /// Sends `request`, a write that must be refused with `status`, between cached listings;
    /// asserts that the listings after it are still answered from the cache, unchanged and
    /// right.
    async fn refused(&self, what: &str, request: RequestBuilder, status: StatusCode) {
        let before = self.cache(what).await;
        send(request, status, what).await;
        let hits = from_cache(self.cached).await;
        for (query, before) in WATCHED.iter().zip(&before) {
            let after = list(self.cached, self.user, query).await;
            assert_eq!(&after, before, "after {what}: ?{query} unchanged");
            let fresh = list(self.reference, self.user, query).await;
            assert_eq!(
                after, fresh,
                "after {what}: ?{query}, cached instance and uncached one"
            );
        }
        assert_eq!(
            from_cache(self.cached).await,
            hits + WATCHED.len() as u64,
            "after {what}: every listing still answered from the cache"
        );
    }
}

on_both_backends! {
    /// Writes that reach the database without the service, by hand in SQL, give the owner's
    /// tasks a new revision too (the triggers), and so does emptying the table at once.
    async fn a_write_by_hand_in_sql_shows_in_the_next_listing(backend: Backend) {
        let app = caching_instance(backend).await;
        let reference = another_instance(&app, 0).await;
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;

        let cached = listed_twice(&app, &alice, "", "before the UPDATE").await;
        app.run_sql(&format!(
            "UPDATE tasks SET title = 'renamed in SQL' WHERE user_id = '{}'",
            alice.id
        ))
        .await;
        assert_shows(&app, &reference, &alice, "", &cached, "an UPDATE in SQL").await;

        let cached = listed_twice(&app, &alice, "", "before emptying the table").await;
        app.run_sql(match backend {
            Backend::Postgres => "TRUNCATE tasks CASCADE",
            Backend::Sqlite => "DELETE FROM tasks",
        })
        .await;
        assert_shows(&app, &reference, &alice, "", &cached, "emptying the table").await;
        assert_eq!(list(&app, &alice, "").await.json()["total"], 0);
    }

    /// Concurrent writes of several owners go in one run, one statement for all of them
    /// (storage/group_commit.rs): each owner's tasks get a new revision.
    async fn writes_of_several_owners_in_one_run_show_in_each_owners_next_listing(
        backend: Backend
    ) {
        let app = caching_instance(backend).await;
        let reference = another_instance(&app, 0).await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let alices = seed(&app, &alice).await;
        let bobs = seed(&app, &bob).await;

        for (round, method) in [Method::POST, Method::PATCH].into_iter().enumerate() {
            let cached_alice = listed_twice(&app, &alice, "", "alice, before the run").await;
            let cached_bob = listed_twice(&app, &bob, "", "bob, before the run").await;
            let mut requests = Vec::new();
            for (user, tasks) in [(&alice, &alices), (&bob, &bobs)] {
                for task in tasks.iter().take(3) {
                    let title = json!({"title": format!("run {round} of {}", user.username)});
                    requests.push(if method == Method::POST {
                        app.authed(Method::POST, &TestApp::tasks_path(user), &user.token)
                            .json(&title)
                    } else {
                        let path = TestApp::task_path(user, id_of(task));
                        app.authed(Method::PATCH, &path, &user.token).json(&title)
                    });
                }
            }
            for response in Blocker::send_meanwhile(&app, requests).await {
                assert!(response.status().is_success(), "{method}: {}", response.status());
            }
            let what = format!("a run of {method}s of both owners");
            assert_shows(&app, &reference, &alice, "", &cached_alice, &what).await;
            assert_shows(&app, &reference, &bob, "", &cached_bob, &what).await;
        }
    }
}

/// Asserts that `cached`'s listing of `query`, which was `before` from its cache, shows a
/// write made through `writer`: it is fresh (not counted as from the cache), differs from
/// `before`, and is the writer's own listing.
async fn assert_shows(
    cached: &TestApp,
    writer: &TestApp,
    user: &TestUser,
    query: &str,
    before: &Answer,
    what: &str,
) {
    let hits = from_cache(cached).await;
    let after = list(cached, user, query).await;
    assert_eq!(
        from_cache(cached).await,
        hits,
        "after {what}: ?{query} not from the cache"
    );
    assert_ne!(&after, before, "after {what}: ?{query} shows it");
    assert_eq!(
        after,
        list(writer, user, query).await,
        "after {what}: ?{query}, both instances"
    );
}

/// One listing's answer: its Content-Type and its body, exactly as sent (JSON is UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a listing is JSON")
    }
}

/// Lists `user`'s tasks through `app` with `query` (without the `?`), which must be a 200.
async fn list(app: &TestApp, user: &TestUser, query: &str) -> Answer {
    let path = if query.is_empty() {
        TestApp::tasks_path(user)
    } else {
        format!("{}?{query}", TestApp::tasks_path(user))
    };
    let response = app
        .authed(Method::GET, &path, &user.token)
        .send()
        .await
        .expect("GET request");
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|value| value.to_str().expect("an ASCII Content-Type").to_owned())
        .unwrap_or_default();
    let bytes = response.bytes().await.expect("the listing's body");
    let body = String::from_utf8(bytes.to_vec()).expect("the listing is UTF-8");
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    Answer { content_type, body }
}

/// Lists `query` through `app` twice and asserts that the second answer came from its
/// cache and is the first one; returns it.
async fn listed_twice(app: &TestApp, user: &TestUser, query: &str, when: &str) -> Answer {
    let first = list(app, user, query).await;
    let hits = from_cache(app).await;
    let again = list(app, user, query).await;
    assert_eq!(
        from_cache(app).await,
        hits + 1,
        "{when}: ?{query} again, from the cache"
    );
    assert_eq!(again, first, "{when}: ?{query} again, the same answer");
    again
}

/// `task_listings_from_cache_total` on `app`'s `/metrics`.
async fn from_cache(app: &TestApp) -> u64 {
    let response = app
        .request(Method::GET, "/metrics")
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK, "GET /metrics");
    let exposition = response.text().await.expect("the exposition");
    exposition
        .lines()
        .find_map(|line| line.strip_prefix("task_listings_from_cache_total "))
        .map(|value| value.trim().parse::<f64>().expect("a number") as u64)
        .unwrap_or_else(|| panic!("task_listings_from_cache_total in /metrics:\n{exposition}"))
}

/// Sends a write, asserts its status, and returns its JSON body (`null` if none).
async fn send(request: RequestBuilder, status: StatusCode, what: &str) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let got = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn with_metrics(settings: &mut Settings) {
    settings.metrics_token = Some(Secret::new(METRICS_TOKEN));
}

/// An instance with the default cache, on a fresh database of `backend`.
async fn caching_instance(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, with_metrics).await
}

/// Another instance on `app`'s database, with a cache of `max_bytes` (0: none).
async fn another_instance(app: &TestApp, max_bytes: u64) -> TestApp {
    TestApp::spawn_on(&app.database_url, |settings| {
        with_metrics(settings);
        settings.listing_cache_max_bytes = max_bytes;
    })
    .await
}

/// Creates five tasks for `user` with every field a filter looks at (two of them overdue by
/// date, one of those completed); returns them in order of creation.
async fn seed(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let bodies = [
        json!({"title": "buy milk", "priority": "high", "tags": ["home"],
               "due_at": "2020-01-01T09:00:00Z"}),
        json!({"title": "pay rent", "priority": "urgent", "tags": ["home", "money"],
               "due_at": "2031-06-01T09:00:00Z"}),
        json!({"title": "write report", "priority": "low", "tags": ["work"]}),
        json!({"title": "plan the trip", "description": "pack oat milk", "tags": ["travel"],
               "due_at": "2029-03-01T09:00:00Z", "completed": true}),
        json!({"title": "ship the release", "priority": "high", "tags": ["work"],
               "due_at": "2020-06-01T09:00:00Z", "completed": true}),
    ];
    let mut tasks = Vec::new();
    for body in bodies {
        tasks.push(app.create_task(user, body).await);
    }
    tasks
}

fn id_of(task: &Value) -> &str {
    task["id"].as_str().expect("a task has a string id")
}

/// The ids of a page's items, in order.
fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|task| id_of(task).to_owned())
        .collect()
}

/// The titles of a listing's items, sorted.
fn titles(answer: &Answer) -> Vec<String> {
    let page = answer.json();
    let mut titles: Vec<String> = page["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|task| task["title"].as_str().expect("a title").to_owned())
        .collect();
    titles.sort();
    titles
}

fn sorted(titles: &[&str]) -> Vec<String> {
    let mut titles: Vec<String> = titles.iter().map(|title| (*title).to_owned()).collect();
    titles.sort();
    titles
}

/// Asserts that every task of a listing is `user`'s.
fn assert_owned_by(answer: &Answer, user: &TestUser) {
    let page = answer.json();
    for task in page["items"].as_array().expect("items is an array") {
        assert_eq!(
            task["user_id"],
            user.id.as_str(),
            "{} listed {task}",
            user.username
        );
    }
}
