//! Listing by tag, by due date and by priority stays an index scan for a user with 100 000
//! tasks, on both databases: the plans of the very statements the listing runs
//! (`Store::explain_listing`; on PostgreSQL the generic plan of the prepared statement, which
//! is what the service runs), on tables bulk-loaded and analysed. Printed with
//! `cargo test --test planning_plans -- --nocapture`.

mod common;

use common::*;
use todo_api::{storage, tasks::domain::ListQuery};

const TASKS: i64 = 100_000;
const OWNER: &str = "planner";

/// The other user's tasks carry two more tags each, so that `planner`'s tags are a small part
/// of the tag table, as one user's are in a real database.
const SOMEONE_ELSES_TAGS: &str = "INSERT INTO task_tags (task_id, user_id, tag_key, tag)
     SELECT id, user_id, tag, tag FROM tasks, (SELECT 'home' AS tag UNION ALL SELECT 'misc') AS t
     WHERE user_id = 'someone-else'";

/// 100 000 tasks of `planner` and 100 000 of someone else: a fifth without a due date (the
/// others due hourly from 2027-01-15 for 5 000 hours, February 2027 a window of about 13 %), a
/// tenth tagged `work`, priorities and completion spread evenly.
const LOAD_POSTGRES: [&str; 5] = [
    "INSERT INTO tasks (id, user_id, title, title_key, completed, created_at, updated_at,
                        priority, tags, due_at)
     SELECT gen_random_uuid(), CASE WHEN i <= 100000 THEN 'planner' ELSE 'someone-else' END,
            'task ' || i, 'task ' || i, i % 3 = 0, now() - i * interval '1 second', now(),
            i % 4, CASE WHEN i % 10 = 0 THEN '[\"work\"]' ELSE '[]' END,
            CASE WHEN i % 5 = 0 THEN NULL
                 ELSE to_timestamp(1800000000) + (i % 5000) * interval '1 hour' END
     FROM generate_series(1, 200000) AS i",
    "INSERT INTO task_tags (task_id, user_id, tag_key, tag)
     SELECT id, user_id, 'work', 'work' FROM tasks WHERE tags = '[\"work\"]'",
    SOMEONE_ELSES_TAGS,
    // As autovacuum would: the visibility map lets counts read the index alone.
    "VACUUM ANALYZE tasks",
    "VACUUM ANALYZE task_tags",
];

const LOAD_SQLITE: [&str; 4] = [
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
     INSERT INTO tasks (id, user_id, title, title_key, completed, created_at, updated_at,
                        priority, tags, due_at)
     SELECT printf('00000000-0000-7000-8000-%012d', i),
            CASE WHEN i <= 100000 THEN 'planner' ELSE 'someone-else' END,
            'task ' || i, 'task ' || i, i % 3 = 0, 1700000000000 - i * 1000, 1700000000000,
            i % 4, CASE WHEN i % 10 = 0 THEN '[\"work\"]' ELSE '[]' END,
            CASE WHEN i % 5 = 0 THEN NULL ELSE 1800000000000 + (i % 5000) * 3600000 END
     FROM n",
    "INSERT INTO task_tags (task_id, user_id, tag_key, tag)
     SELECT id, user_id, 'work', 'work' FROM tasks WHERE tags = '[\"work\"]'",
    SOMEONE_ELSES_TAGS,
    "ANALYZE",
];

/// The listings whose plans must be index scans, and whether the plan may sort: a filter on
/// a tag may sort the tasks carrying it (a tenth here), never a user's whole task set.
const LISTINGS: [(&str, bool); 9] = [
    ("sort_by=due_at&sort_order=asc", false),
    ("sort_by=due_at&sort_order=desc", false),
    ("sort_by=priority&sort_order=desc", false),
    ("sort_by=priority&sort_order=asc&page=40", false),
    (
        "due_after=2027-02-01T00:00:00Z&due_before=2027-03-01T00:00:00Z&sort_by=due_at",
        false,
    ),
    ("overdue=true&sort_by=due_at&sort_order=asc", false),
    ("tag=work", true),
    ("tag=work&sort_by=due_at", true),
    ("tag=work&priority=urgent&priority=high", true),
];

fn query(text: &str) -> ListQuery {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text).unwrap();
    ListQuery::parse(pairs, 100).unwrap()
}

on_both_backends! {
    async fn listing_by_tag_due_date_or_priority_is_an_index_scan_for_100_000_tasks(
        backend: Backend
    ) {
        let (url, postgres) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("todo.db").display());
                // Kept for the test's length.
                std::mem::forget(dir);
                (url, None)
            }
            Backend::Postgres => {
                let (name, url) = create_test_database().await;
                (url, Some(name))
            }
        };
        let store = storage::connect(&test_settings(&url)).await.unwrap();
        store.migrate().await.unwrap();
        match backend {
            Backend::Sqlite => {
                let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap();
                for sql in LOAD_SQLITE {
                    sqlx::query(sql).execute(&mut connection).await.unwrap();
                }
            }
            Backend::Postgres => {
                let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap();
                for sql in LOAD_POSTGRES {
                    sqlx::query(sql).execute(&mut connection).await.unwrap();
                }
            }
        }
        let listing = store.list_tasks(OWNER, &query("tag=work"), None).await.unwrap();
        let page = listing.tasks.expect("a page");
        assert_eq!((page.len(), listing.total), (20, (TASKS / 10) as u64), "the load is there");

        for (listing, may_sort) in LISTINGS {
            let plan = store.explain_listing(OWNER, &query(listing)).await.unwrap();
            println!("{backend:?} {listing}:\n  {}", plan.join("\n  "));
            let text = plan.join("\n");
            match backend {
                Backend::Postgres => {
                    // The plan the service runs is the generic one (`plan_cache_mode`), whose
                    // conditions name parameters, not values.
                    assert!(text.contains("= $1"), "{listing}: not the generic plan\n{text}");
                    assert!(!text.contains("Seq Scan"), "{listing}: a sequential scan\n{text}");
                    // A listing with the kept totals checks the owner's revision before it
                    // reads the page (the listing cache); a counted one has no revision.
                    let filters = query(listing);
                    let kept = filters.q.is_none()
                        && filters.priorities.is_empty()
                        && filters.tags.is_empty()
                        && filters.due_after.is_none()
                        && filters.due_before.is_none()
                        && filters.overdue.is_none();
                    assert_eq!(
                        text.contains("One-Time Filter"),
                        kept,
                        "{listing}: the revision check\n{text}"
                    );
                    // The outer ORDER BY sorts the page's rows (at most a page); below the
                    // page's LIMIT nothing may sort.
                    let page = text.split_once("Limit").map_or("", |(_, page)| page);
                    if !may_sort {
                        assert!(!page.contains("Sort"), "{listing}: sorts\n{text}");
                    }
                }
                Backend::Sqlite => {
                    for line in &plan {
                        assert!(
                            !line.starts_with("SCAN tasks") && !line.starts_with("SCAN task_tags"),
                            "{listing}: a full scan: {line}\n{text}"
                        );
                    }
                    // `json_group_array(… ORDER BY …)` orders the page's rows, at most a page.
                    if !may_sort {
                        assert!(
                            !text.contains("TEMP B-TREE FOR ORDER BY"),
                            "{listing}: sorts\n{text}"
                        );
                    }
                }
            }
        }
        store.close().await;
        if let Some(name) = postgres {
            drop_test_database(name);
        }
    }
}
