//! Listing tasks: pagination, every sort, the filters, and the 400s for bad parameters.

mod common;

use std::{cmp::Ordering, collections::HashSet};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SORT_COLUMNS: [&str; 4] = ["created_at", "updated_at", "title", "completed"];
const SORT_ORDERS: [&str; 2] = ["asc", "desc"];
const SEEDED: usize = 23;

fn id_of(task: &Value) -> &str {
    task["id"].as_str().expect("a task has a string id")
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items is an array")
}

/// Lists `user`'s tasks with `query` (without the `?`), which must succeed.
async fn list(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let path = format!("{}?{query}", TestApp::tasks_path(user));
    let (status, page) = app.get_json(user, &path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {page}");
    page
}

/// Creates 23 tasks whose titles and completion flags repeat, so that every sort has ties,
/// then changes every fourth one, newest first, so that `updated_at` order is neither
/// `created_at` order nor its reverse. Returns the tasks as they are in the end.
async fn seed(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let titles = ["bravo", "alpha", "charlie", "alpha", "delta"];
    let mut tasks = Vec::with_capacity(SEEDED);
    for i in 0..SEEDED {
        let task = app
            .create_task(
                user,
                json!({"title": titles[i % titles.len()], "completed": i % 3 == 0}),
            )
            .await;
        tasks.push(task);
    }
    for i in (0..SEEDED).step_by(4).rev() {
        let response = app
            .authed(
                Method::PATCH,
                &TestApp::task_path(user, id_of(&tasks[i])),
                &user.token,
            )
            .json(&json!({"description": "changed after creation"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tasks[i] = response.json().await.unwrap();
    }
    tasks
}

/// How two tasks compare on `sort_by`, ascending.
fn compare(a: &Value, b: &Value, sort_by: &str) -> Ordering {
    match sort_by {
        "created_at" | "updated_at" => timestamp(&a[sort_by]).cmp(&timestamp(&b[sort_by])),
        "title" => {
            let title = |task: &Value| task["title"].as_str().unwrap().to_lowercase();
            title(a).cmp(&title(b))
        }
        "completed" => a["completed"]
            .as_bool()
            .unwrap()
            .cmp(&b["completed"].as_bool().unwrap()),
        other => panic!("no sort column {other}"),
    }
}

fn uuid_of(task: &Value) -> uuid::Uuid {
    uuid::Uuid::parse_str(id_of(task)).expect("a task id is a UUID")
}

/// Asserts that `tasks` are in `sort_by`/`sort_order` order, with ties all broken by id
/// in one direction.
fn assert_sorted(tasks: &[Value], sort_by: &str, sort_order: &str) {
    let mut tie_directions = HashSet::new();
    for pair in tasks.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let order = compare(a, b, sort_by);
        let wrong = match sort_order {
            "asc" => Ordering::Greater,
            _ => Ordering::Less,
        };
        assert_ne!(
            order, wrong,
            "sort_by={sort_by}&sort_order={sort_order}: {a} comes before {b}"
        );
        if order == Ordering::Equal {
            let by_id = uuid_of(a).cmp(&uuid_of(b));
            assert_ne!(by_id, Ordering::Equal, "the same task twice: {a}");
            tie_directions.insert(by_id);
        }
    }
    assert!(
        tie_directions.len() <= 1,
        "sort_by={sort_by}&sort_order={sort_order}: ties are not broken by id in one direction"
    );
}

on_both_databases! {
    async fn the_default_listing_is_page_one_of_twenty_newest_first(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        let (status, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["page"], 1);
        assert_eq!(page["page_size"], 20);
        assert_eq!(page["total"], SEEDED);
        assert_eq!(page["total_pages"], 2);
        assert_eq!(items(&page).len(), 20);
        assert_sorted(items(&page), "created_at", "desc");

        let newest = tasks
            .iter()
            .map(|t| timestamp(&t["created_at"]))
            .max()
            .unwrap();
        assert_eq!(timestamp(&items(&page)[0]["created_at"]), newest);

        let explicit = list(
            &app,
            &alice,
            "page=1&page_size=20&sort_by=created_at&sort_order=desc",
        )
        .await;
        assert_eq!(
            explicit, page,
            "the defaults are page 1, 20 a page, created_at desc"
        );
    }

    async fn sort_order_defaults_to_desc_for_every_column(app: TestApp) {
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;
        for sort_by in SORT_COLUMNS {
            let implicit = list(&app, &alice, &format!("sort_by={sort_by}&page_size=100")).await;
            let explicit = list(
                &app,
                &alice,
                &format!("sort_by={sort_by}&sort_order=desc&page_size=100"),
            )
            .await;
            assert_eq!(implicit, explicit, "sort_by={sort_by}");
        }
    }

    async fn page_size_may_be_anything_from_1_to_100(app: TestApp) {
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;
        let cases = [(1, 1, 23), (7, 7, 4), (23, 23, 1), (100, 23, 1)];
        for (page_size, on_first_page, total_pages) in cases {
            let page = list(&app, &alice, &format!("page_size={page_size}")).await;
            assert_eq!(page["page_size"], page_size, "page_size={page_size}");
            assert_eq!(items(&page).len(), on_first_page, "page_size={page_size}");
            assert_eq!(page["total"], SEEDED, "page_size={page_size}");
            assert_eq!(page["total_pages"], total_pages, "page_size={page_size}");
        }
        let last = list(&app, &alice, "page_size=7&page=4").await;
        assert_eq!(items(&last).len(), 2, "the last page holds the rest");
    }

    async fn every_sort_orders_the_whole_listing(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        for sort_by in SORT_COLUMNS {
            for sort_order in SORT_ORDERS {
                let page = list(
                    &app,
                    &alice,
                    &format!("sort_by={sort_by}&sort_order={sort_order}&page_size=100"),
                )
                .await;
                assert_eq!(
                    items(&page).len(),
                    SEEDED,
                    "sort_by={sort_by}&sort_order={sort_order}"
                );
                assert_sorted(items(&page), sort_by, sort_order);
                for task in &tasks {
                    assert!(items(&page).contains(task), "{task} listed as it is");
                }
            }
        }
    }

    async fn ascending_is_the_reverse_of_descending_for_every_sort(app: TestApp) {
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;
        for sort_by in SORT_COLUMNS {
            let asc = list(
                &app,
                &alice,
                &format!("sort_by={sort_by}&sort_order=asc&page_size=100"),
            )
            .await;
            let desc = list(
                &app,
                &alice,
                &format!("sort_by={sort_by}&sort_order=desc&page_size=100"),
            )
            .await;
            let mut reversed = items(&desc).clone();
            reversed.reverse();
            assert_eq!(items(&asc), &reversed, "sort_by={sort_by}");
        }
    }

    async fn walking_the_pages_visits_every_task_exactly_once_for_every_sort(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        let expected: HashSet<&str> = tasks.iter().map(id_of).collect();
        for sort_by in SORT_COLUMNS {
            for sort_order in SORT_ORDERS {
                let sort = format!("sort_by={sort_by}&sort_order={sort_order}");
                let mut walked = Vec::new();
                for (number, size) in [(1, 5), (2, 5), (3, 5), (4, 5), (5, 3)] {
                    let page =
                        list(&app, &alice, &format!("{sort}&page_size=5&page={number}")).await;
                    assert_eq!(page["page"], number, "{sort}");
                    assert_eq!(page["page_size"], 5, "{sort}");
                    assert_eq!(page["total"], SEEDED, "{sort}");
                    assert_eq!(page["total_pages"], 5, "{sort}");
                    assert_eq!(items(&page).len(), size, "{sort} page {number}");
                    walked.extend(items(&page).iter().cloned());
                }
                let ids: Vec<&str> = walked.iter().map(id_of).collect();
                let unique: HashSet<&str> = ids.iter().copied().collect();
                assert_eq!(unique.len(), ids.len(), "{sort}: a task appeared twice");
                assert_eq!(unique, expected, "{sort}: every task, once");
                assert_sorted(&walked, sort_by, sort_order);

                let past = list(&app, &alice, &format!("{sort}&page_size=5&page=6")).await;
                assert_eq!(items(&past).len(), 0, "{sort}: past the end");
            }
        }
    }

    async fn a_page_past_the_end_is_a_200_with_no_items(app: TestApp) {
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;
        let second = list(&app, &alice, "page=2").await;
        assert_eq!(items(&second).len(), 3);
        for number in [3, 1000] {
            let page = list(&app, &alice, &format!("page={number}")).await;
            assert_eq!(page["items"], json!([]), "page {number}");
            assert_eq!(page["page"], number);
            assert_eq!(page["total"], SEEDED);
            assert_eq!(page["total_pages"], 2);
        }
    }

    async fn a_user_without_tasks_gets_an_empty_page(app: TestApp) {
        let alice = app.signup("alice").await;
        let page = list(&app, &alice, "").await;
        assert_eq!(
            page,
            json!({"items": [], "total": 0, "page": 1, "page_size": 20, "total_pages": 0})
        );
    }

    async fn completed_filters_the_listing(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        let mut seen = HashSet::new();
        for completed in [true, false] {
            let expected: HashSet<&str> = tasks
                .iter()
                .filter(|t| t["completed"] == completed)
                .map(id_of)
                .collect();
            let page = list(
                &app,
                &alice,
                &format!("completed={completed}&page_size=100"),
            )
            .await;
            assert_eq!(page["total"], expected.len(), "completed={completed}");
            let listed: HashSet<&str> = items(&page).iter().map(id_of).collect();
            assert_eq!(listed, expected, "completed={completed}");
            seen.extend(listed.into_iter().map(str::to_owned));

            let paged = list(&app, &alice, &format!("completed={completed}&page_size=3")).await;
            assert_eq!(
                paged["total"],
                expected.len(),
                "completed={completed}, paged"
            );
            assert_eq!(paged["total_pages"], expected.len().div_ceil(3));
            assert!(items(&paged).iter().all(|t| t["completed"] == completed));
        }
        assert_eq!(seen.len(), SEEDED, "the two filters split the tasks");
    }

    async fn q_matches_title_and_description_ignoring_case(app: TestApp) {
        let alice = app.signup("alice").await;
        let buy = app.create_task(&alice, json!({"title": "Buy MILK"})).await;
        let call = app
            .create_task(
                &alice,
                json!({
                    "title": "Call mom",
                    "description": "ask about the Milkman",
                    "completed": true,
                }),
            )
            .await;
        let shop = app
            .create_task(
                &alice,
                json!({"title": "Groceries", "description": "milk, bread"}),
            )
            .await;
        let walk = app
            .create_task(
                &alice,
                json!({"title": "Walk the dog", "description": "not today"}),
            )
            .await;
        let cases = [
            ("milk", vec![&buy, &call, &shop], "lower case"),
            ("MILK", vec![&buy, &call, &shop], "upper case"),
            ("mIlK", vec![&buy, &call, &shop], "mixed case"),
            ("milkman", vec![&call], "in a description only"),
            ("the%20dog", vec![&walk], "with a space"),
            ("groceries", vec![&shop], "in a title only"),
            ("nothing+like+this", vec![], "nowhere"),
            (
                "milk&completed=true",
                vec![&call],
                "with the completed filter",
            ),
            (
                "milk&completed=false",
                vec![&buy, &shop],
                "with the other completed filter",
            ),
        ];
        for (q, expected, why) in cases {
            let page = list(&app, &alice, &format!("q={q}&page_size=100")).await;
            let listed: HashSet<&str> = items(&page).iter().map(id_of).collect();
            let expected: HashSet<&str> = expected.into_iter().map(id_of).collect();
            assert_eq!(listed, expected, "q={q} ({why})");
            assert_eq!(page["total"], expected.len(), "q={q} ({why})");
        }
    }

    async fn q_takes_percent_underscore_and_backslash_literally(app: TestApp) {
        let alice = app.signup("alice").await;
        let percent = app.create_task(&alice, json!({"title": "50% off"})).await;
        let hundreds = app.create_task(&alice, json!({"title": "500 off"})).await;
        let underscore = app
            .create_task(&alice, json!({"title": "snake_case"}))
            .await;
        let letters = app
            .create_task(&alice, json!({"title": "snakescase"}))
            .await;
        let backslash = app
            .create_task(
                &alice,
                json!({"title": "Clean up", "description": r"C:\temp"}),
            )
            .await;
        let cases = [
            ("50%25", vec![&percent], "50%"),
            ("%25", vec![&percent], "%"),
            ("e_c", vec![&underscore], "e_c"),
            ("_", vec![&underscore], "_"),
            ("%5C", vec![&backslash], r"\"),
            ("off", vec![&percent, &hundreds], "off"),
            ("snake", vec![&underscore, &letters], "snake"),
        ];
        for (encoded, expected, q) in cases {
            let page = list(&app, &alice, &format!("q={encoded}&page_size=100")).await;
            let listed: HashSet<&str> = items(&page).iter().map(id_of).collect();
            let expected: HashSet<&str> = expected.into_iter().map(id_of).collect();
            assert_eq!(listed, expected, "q={q:?} must match literally");
            assert_eq!(page["total"], expected.len(), "q={q:?}");
        }
    }

    async fn a_bad_listing_parameter_is_a_400_naming_it(app: TestApp) {
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;
        let cases: [(&str, &[&str], &str); 18] = [
            ("page=0", &["page"], "page 0"),
            ("page=-1", &["page"], "a negative page"),
            ("page=abc", &["page"], "a page that is not a number"),
            ("page=1.5", &["page"], "a fractional page"),
            ("page_size=0", &["page_size"], "page_size 0"),
            ("page_size=101", &["page_size"], "page_size 101"),
            ("page_size=1000", &["page_size"], "page_size 1000"),
            ("page_size=-5", &["page_size"], "a negative page_size"),
            (
                "page_size=ten",
                &["page_size"],
                "a page_size that is not a number",
            ),
            (
                "sort_by=password",
                &["sort_by"],
                "sorting by a column that is not offered",
            ),
            ("sort_by=id%3Bdrop", &["sort_by"], "SQL in sort_by"),
            ("sort_order=up", &["sort_order"], "an unknown sort_order"),
            (
                "completed=yes",
                &["completed"],
                "completed that is not true or false",
            ),
            ("colour=red", &["colour"], "an unknown parameter"),
            ("pagesize=10", &["pagesize"], "a misspelt parameter"),
            ("page=1&page=2", &["page"], "a repeated page"),
            (
                "sort_by=title&sort_by=title",
                &["sort_by"],
                "a repeated sort_by",
            ),
            (
                "page=0&page_size=0&sort_by=password&sort_order=up&completed=yes",
                &["completed", "page", "page_size", "sort_by", "sort_order"],
                "five bad parameters at once",
            ),
        ];
        for (query, fields, why) in cases {
            let response = app
                .authed(
                    Method::GET,
                    &format!("{}?{query}", TestApp::tasks_path(&alice)),
                    &alice.token,
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{why}: ?{query}"
            );
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            let mut named = error_fields(&problem);
            named.sort();
            named.dedup();
            assert_eq!(named, fields, "{why}: ?{query} names {problem}");
        }
    }
}
