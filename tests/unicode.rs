//! Every language: `q` and `sort_by=title` ignore case in every script, identically on both
//! databases and whatever PostgreSQL's locale; titles of invisible characters only are empty;
//! an email address is one account however it is spelled; rows written before the folded
//! keys existed are back-filled at start-up.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

/// The titles of one listing of `user`'s tasks, with `params` (page size 100).
async fn titles(app: &TestApp, user: &TestUser, params: &[(&str, &str)]) -> Vec<String> {
    let response = app
        .authed(Method::GET, &TestApp::tasks_path(user), &user.token)
        .query(params)
        .query(&[("page_size", "100")])
        .send()
        .await
        .expect("list request");
    let status = response.status();
    let page: Value = response.json().await.expect("a JSON page");
    assert_eq!(status, StatusCode::OK, "{params:?}: {page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(
        page["total"],
        items.len(),
        "{params:?}: the total counts the matches"
    );
    items
        .iter()
        .map(|task| task["title"].as_str().expect("a title").to_owned())
        .collect()
}

/// The titles `q` finds, sorted by title.
async fn search(app: &TestApp, user: &TestUser, q: &str) -> Vec<String> {
    titles(
        app,
        user,
        &[("q", q), ("sort_by", "title"), ("sort_order", "asc")],
    )
    .await
}

/// Tasks in several scripts, and what each search term must find: in every case, in NFC or
/// NFD, with or without invisible characters; accents still count.
const SEARCHABLE: [(&str, Option<&str>); 10] = [
    ("CAFÉ order", None),
    ("cafe without an accent", None),
    ("Москва trip", None),
    ("ΟΔΥΣΣΕΥΣ", Some("the Odyssey, in capitals")),
    ("Straße fegen", None),
    ("İstanbul flight", None),
    ("ﬁle taxes", None),
    ("東京 and Αθήνα", None),
    ("groceries", Some("Crème BRÛLÉE")),
    ("100% done", None),
];

const SEARCHES: [(&str, &[&str], &str); 24] = [
    ("café", &["CAFÉ order"], "lower case finds upper case"),
    ("CAFÉ", &["CAFÉ order"], "the same case"),
    ("Café", &["CAFÉ order"], "mixed case"),
    (
        "cafe\u{301}",
        &["CAFÉ order"],
        "an NFD term finds an NFC title",
    ),
    (
        "ca\u{200b}fé",
        &["CAFÉ order"],
        "invisible characters in the term are ignored",
    ),
    ("cafe", &["cafe without an accent"], "accents count"),
    ("москва", &["Москва trip"], "Cyrillic lower case"),
    ("МОСКВА", &["Москва trip"], "Cyrillic upper case"),
    ("οδυσσευς", &["ΟΔΥΣΣΕΥΣ"], "Greek, with a final sigma"),
    (
        "Οδυσσευσ",
        &["ΟΔΥΣΣΕΥΣ"],
        "Greek, with a medial sigma at the end",
    ),
    ("straße", &["Straße fegen"], "ß"),
    ("STRASSE", &["Straße fegen"], "ß folds to ss"),
    ("STRAẞE", &["Straße fegen"], "capital ẞ"),
    ("İSTANBUL", &["İstanbul flight"], "dotted capital I"),
    (
        "i\u{307}stanbul",
        &["İstanbul flight"],
        "İ folds to i and a combining dot",
    ),
    ("ISTANBUL", &[], "default (non-Turkic) folding: I is not İ"),
    ("FILE", &["ﬁle taxes"], "a ligature is its letters"),
    (
        "ＴＡＸＥＳ",
        &["ﬁle taxes"],
        "full-width letters are their ASCII forms",
    ),
    ("東京 AND αθήνα", &["東京 and Αθήνα"], "mixed scripts"),
    ("brûlée", &["groceries"], "descriptions are searched too"),
    (
        "THE ODYSSEY",
        &["ΟΔΥΣΣΕΥΣ"],
        "in descriptions too, any case",
    ),
    (
        "0%",
        &["100% done"],
        "LIKE wildcards in the term are literal",
    ),
    ("_", &[], "an underscore is not a wildcard"),
    (
        "\u{200b}",
        &[],
        "an invisible term is no filter (checked apart)",
    ),
];

/// Creates the searchable tasks for `user`.
async fn create_searchable(app: &TestApp, user: &TestUser) {
    for (title, description) in SEARCHABLE {
        app.create_task(user, json!({"title": title, "description": description}))
            .await;
    }
}

/// Asserts every search of [`SEARCHES`] on `user`'s searchable tasks.
async fn assert_searches(app: &TestApp, user: &TestUser) {
    for (q, expected, why) in SEARCHES {
        let found = search(app, user, q).await;
        if q == "\u{200b}" {
            assert_eq!(found.len(), SEARCHABLE.len(), "q={q:?}: {why}");
        } else {
            assert_eq!(found, expected, "q={q:?}: {why}");
        }
    }
}

/// Titles in several scripts, in the order `sort_by=title&sort_order=asc` must give on both
/// databases: code-point order of the folded titles (digits, Latin, accented Latin, Greek,
/// Cyrillic, CJK), capitals folded (`Zebra` before `Äpfel`, `ice` before `İzmir`, whose
/// key is `i` + U+0307).
const SORTED: [&str; 15] = [
    "10 tasks",
    "Apple",
    "banana",
    "ice",
    "İzmir",
    "Straße",
    "Zebra",
    "Äpfel",
    "Éclair",
    "Αλφα",
    "Ωμέγα",
    "Арбуз",
    "Москва",
    "Ёлка",
    "東京",
];

/// Creates the [`SORTED`] titles in a scrambled order.
async fn create_sortable(app: &TestApp, user: &TestUser) {
    for i in [7, 2, 14, 0, 11, 5, 9, 3, 12, 1, 8, 13, 4, 10, 6] {
        app.create_task(user, json!({"title": SORTED[i]})).await;
    }
}

async fn assert_sorted(app: &TestApp, user: &TestUser) {
    let ascending = titles(app, user, &[("sort_by", "title"), ("sort_order", "asc")]).await;
    assert_eq!(ascending, SORTED);
    let mut descending = titles(app, user, &[("sort_by", "title"), ("sort_order", "desc")]).await;
    descending.reverse();
    assert_eq!(descending, SORTED);
}

on_both_databases! {
    async fn search_ignores_case_and_spelling_in_every_script(app: TestApp) {
        let alice = app.signup("alice").await;
        create_searchable(&app, &alice).await;
        assert_searches(&app, &alice).await;
    }

    async fn title_sort_is_the_same_code_point_order_of_folded_titles_on_both_databases(
        app: TestApp
    ) {
        let alice = app.signup("alice").await;
        create_sortable(&app, &alice).await;
        assert_sorted(&app, &alice).await;
    }

    async fn the_keys_follow_every_change_of_title_and_description(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Apple"})).await;
        let path = TestApp::task_path(&alice, task["id"].as_str().unwrap());
        let send = |method: Method, body: Value| {
            let request = app.authed(method, &path, &alice.token).json(&body);
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{body}");
            }
        };
        send(Method::PATCH, json!({"title": "ÉCOLE", "description": "ЁЛКА"})).await;
        assert_eq!(search(&app, &alice, "école").await, ["ÉCOLE"]);
        assert_eq!(search(&app, &alice, "ёлка").await, ["ÉCOLE"]);
        assert_eq!(search(&app, &alice, "apple").await, Vec::<String>::new());
        send(
            Method::PUT,
            json!({"title": "Straße", "description": null, "completed": false}),
        )
        .await;
        assert_eq!(search(&app, &alice, "STRASSE").await, ["Straße"]);
        assert_eq!(search(&app, &alice, "ёлка").await, Vec::<String>::new());
        // A change that leaves the title alone keeps its key.
        send(Method::PATCH, json!({"completed": true})).await;
        assert_eq!(search(&app, &alice, "strasse").await, ["Straße"]);
    }

    async fn titles_of_invisible_characters_only_are_refused_on_create_put_and_patch(
        app: TestApp
    ) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Keep me"})).await;
        let path = TestApp::task_path(&alice, task["id"].as_str().unwrap());
        for (title, what) in [
            ("\u{200b}", "zero-width space"),
            ("\u{2060}", "word joiner"),
            ("\u{feff}", "byte order mark"),
            ("\u{ad}", "soft hyphen"),
            ("\u{200c}\u{200d}", "zero-width non-joiner and joiner"),
            ("\u{fe0f}", "variation selector"),
            ("\u{3164}", "Hangul filler"),
            ("\u{2800}", "Braille blank"),
            ("\u{180e}", "Mongolian vowel separator"),
            ("\u{202e}\u{2066}", "bidirectional controls"),
            ("\u{e0020}\u{e007f}", "tag characters"),
            ("\u{a0}\u{3000}\u{2028}\u{85}", "no-break, ideographic and line separators"),
            ("\u{1}\u{7f}", "control characters"),
            (" \u{200b}\t\u{feff}\n", "white space and invisibles mixed"),
        ] {
            let create = app
                .authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token)
                .json(&json!({"title": title}))
                .send()
                .await
                .unwrap();
            let put = app
                .authed(Method::PUT, &path, &alice.token)
                .json(&json!({"title": title, "description": null, "completed": true}))
                .send()
                .await
                .unwrap();
            let patch = app
                .authed(Method::PATCH, &path, &alice.token)
                .json(&json!({"title": title}))
                .send()
                .await
                .unwrap();
            for (route, response) in [("POST", create), ("PUT", put), ("PATCH", patch)] {
                let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
                assert_eq!(error_fields(&problem), ["title"], "{route} {what}: {problem}");
                assert_eq!(
                    problem["errors"][0]["message"], "must not be empty",
                    "{route} {what}"
                );
            }
        }
        // Nothing was written: one task, as it was.
        let (status, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 1);
        assert_eq!(page["items"][0], task, "unchanged");
        // Invisible characters around a visible title are trimmed; an emoji keeps its
        // variation selector.
        let trimmed = app
            .create_task(&alice, json!({"title": "\u{200b}\u{feff} milk \u{2060}"}))
            .await;
        assert_eq!(trimmed["title"], "milk");
        let emoji = app.create_task(&alice, json!({"title": "I ❤\u{fe0f}"})).await;
        assert_eq!(emoji["title"], "I ❤\u{fe0f}");
    }

    async fn nfc_and_nfd_spellings_of_an_email_are_one_account(app: TestApp) {
        let nfc = "zo\u{e9}@example.test";
        let nfd = "zoe\u{301}@example.test";
        let signup = |username: &'static str, email: &'static str| {
            app.request(Method::POST, "/api/auth/signup")
                .json(&json!({
                    "username": username,
                    "email": email,
                    "password": PASSWORD,
                    "confirm_password": PASSWORD,
                }))
                .send()
        };
        let created = signup("zoe", nfc).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let created: Value = created.json().await.unwrap();
        let zoe = created["user"]["id"].as_str().unwrap().to_owned();
        assert_eq!(created["user"]["email"], nfc);
        for (email, why) in [
            (nfd, "NFD spelling"),
            ("ZOE\u{301}@EXAMPLE.TEST", "capitals, NFD"),
            ("Zo\u{e9}@Example.Test", "mixed case, NFC"),
        ] {
            let problem = expect_problem(signup("zoe2", email).await.unwrap(), StatusCode::CONFLICT).await;
            assert_eq!(problem["detail"], "email is already registered", "{why}");
        }
        let login = |body: Value| {
            app.request(Method::POST, "/api/auth/login").json(&body).send()
        };
        for body in [
            json!({"email": nfd, "password": PASSWORD}),
            json!({"email": nfc, "password": PASSWORD}),
            json!({"username": nfd, "password": PASSWORD}),
            json!({"email": "ZOÉ@EXAMPLE.TEST", "password": PASSWORD}),
        ] {
            let response = login(body.clone()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{body}");
            let response: Value = response.json().await.unwrap();
            assert_eq!(response["user"]["id"], zoe.as_str(), "{body}");
        }
        let wrong = login(json!({"email": nfd, "password": "not the password"})).await.unwrap();
        expect_problem(wrong, StatusCode::UNAUTHORIZED).await;

        // One form of the domain: IDNA. The address is shown as written.
        let created = signup("bob", "bob@b\u{fc}cher.example").await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let created: Value = created.json().await.unwrap();
        assert_eq!(created["user"]["email"], "bob@b\u{fc}cher.example");
        for email in ["bob@xn--bcher-kva.example", "BOB@BU\u{308}CHER.EXAMPLE"] {
            expect_problem(signup("bob2", email).await.unwrap(), StatusCode::CONFLICT).await;
            let response = login(json!({"email": email, "password": PASSWORD})).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{email}");
        }
    }
}

/// Creates a PostgreSQL database with `options` after `CREATE DATABASE "…"`; returns its name
/// and URL. The `todo_test_` prefix lets the test script sweep it if the test dies.
async fn create_database_with(options: &str) -> (String, String) {
    let name = format!("todo_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL");
    admin
        .execute(format!(r#"CREATE DATABASE "{name}" {options}"#).as_str())
        .await
        .expect("create the database");
    admin.close().await.ok();
    let mut url = url::Url::parse(&admin_url()).unwrap();
    url.set_path(&name);
    (name, url.to_string())
}

/// Search and sort answer the same on databases whose collation is C (which folds ASCII
/// only), and Turkish under ICU (where `lower('I')` is `ı` and `Ä` sorts beside `A`).
#[tokio::test]
async fn postgresql_locales_change_neither_search_nor_title_sort() {
    for options in [
        "TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'",
        "TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'tr-TR'",
    ] {
        let (name, url) = create_database_with(options).await;
        let app = TestApp::spawn_on(&url, |_| {}).await;
        let alice = app.signup("alice").await;
        create_searchable(&app, &alice).await;
        assert_searches(&app, &alice).await;
        let bob = app.signup("bob").await;
        create_sortable(&app, &bob).await;
        assert_sorted(&app, &bob).await;
        app.stop().await;
        drop_test_database(name);
    }
}

/// A database the test owns, so that the application can be restarted on it.
struct OwnDatabase {
    url: String,
    postgres: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl OwnDatabase {
    async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("todo.db").display());
                Self {
                    url,
                    postgres: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let (name, url) = create_test_database().await;
                Self {
                    url,
                    postgres: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// Runs `sql` (with `$n` placeholders) and its `binds` on a connection of its own.
    async fn execute(&self, sql: &str, binds: &[Bind<'_>]) {
        macro_rules! bind_all {
            ($query:expr) => {{
                let mut query = $query;
                for bind in binds {
                    query = match *bind {
                        Bind::Text(text) => query.bind(text),
                        Bind::Int(n) => query.bind(n),
                    };
                }
                query
            }};
        }
        if self.postgres.is_some() {
            let mut connection = PgConnection::connect(&self.url).await.unwrap();
            bind_all!(sqlx::query(sql))
                .execute(&mut connection)
                .await
                .unwrap();
            connection.close().await.ok();
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            bind_all!(sqlx::query(sql))
                .execute(&mut connection)
                .await
                .unwrap();
            connection.close().await.ok();
        }
    }

    /// How many rows `sql` (a `SELECT count(*) …`) counts.
    async fn count(&self, sql: &str) -> i64 {
        if self.postgres.is_some() {
            let mut connection = PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.postgres.take() {
            drop_test_database(name);
        }
    }
}

/// A value for [`OwnDatabase::execute`].
enum Bind<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

on_both_backends! {
    async fn rows_written_without_keys_are_back_filled_at_start_up(backend: Backend) {
        let database = OwnDatabase::new(backend).await;
        let app = TestApp::spawn_on(&database.url, |_| {}).await;
        let alice = app.signup("alice").await;
        app.create_task(&alice, json!({"title": "Zebra"})).await;
        app.stop().await;

        // Rows as the previous version wrote them: the same INSERTs, no keys.
        let (uuid, millis) = match backend {
            Backend::Sqlite => ("$1", "$5"),
            Backend::Postgres => ("$1::uuid", "to_timestamp($5::bigint / 1000.0)"),
        };
        let now = chrono::Utc::now().timestamp_millis();
        let insert_task = format!(
            "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at)
             VALUES ({uuid}, $2, $3, $4, false, {millis}, {millis})"
        );
        for (title, description) in [("CAFÉ order", Some("Москва")), ("Äpfel", None)] {
            let id = uuid::Uuid::now_v7().to_string();
            let binds = [
                Bind::Text(Some(&id)),
                Bind::Text(Some(&alice.id)),
                Bind::Text(Some(title)),
                Bind::Text(description),
                Bind::Int(now),
            ];
            database.execute(&insert_task, &binds).await;
        }
        // An account whose address was stored in NFD, and two whose addresses differ only in
        // their Unicode form: the older keeps the address, the newer logs in by username.
        let hash = bcrypt::hash(PASSWORD, 4).unwrap();
        let insert_user = format!(
            "INSERT INTO users (id, username, email, password_hash, created_at)
             VALUES ({uuid}, $2, $3, $4, {millis})"
        );
        for (username, email, created_at) in [
            ("zoe", "zoe\u{301}@example.test", now),
            ("amelie1", "am\u{e9}lie@example.test", now - 2000),
            ("amelie2", "ame\u{301}lie@example.test", now - 1000),
        ] {
            let id = uuid::Uuid::now_v7().to_string();
            let binds = [
                Bind::Text(Some(&id)),
                Bind::Text(Some(username)),
                Bind::Text(Some(email)),
                Bind::Text(Some(&hash)),
                Bind::Int(created_at),
            ];
            database.execute(&insert_user, &binds).await;
        }
        assert_eq!(database.count("SELECT count(*) FROM tasks WHERE title_key IS NULL").await, 2);

        // Restarted on the same database, the service back-fills before it listens.
        let app = TestApp::spawn_on(&database.url, |_| {}).await;
        assert_eq!(database.count("SELECT count(*) FROM tasks WHERE title_key IS NULL").await, 0);
        assert_eq!(search(&app, &alice, "café").await, ["CAFÉ order"]);
        assert_eq!(search(&app, &alice, "МОСКВА").await, ["CAFÉ order"]);
        let sorted = ["CAFÉ order", "Zebra", "Äpfel"];
        assert_eq!(titles(&app, &alice, &[("sort_by", "title"), ("sort_order", "asc")]).await, sorted);

        let login = |body: Value| app.request(Method::POST, "/api/auth/login").json(&body).send();
        let user_of = |response: reqwest::Response| async move {
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            body["user"]["username"].as_str().unwrap().to_owned()
        };
        let zoe = login(json!({"email": "zo\u{e9}@example.test", "password": PASSWORD}));
        assert_eq!(user_of(zoe.await.unwrap()).await, "zoe", "NFC login of an NFD row");
        for email in ["am\u{e9}lie@example.test", "ame\u{301}lie@example.test"] {
            let amelie = login(json!({"email": email, "password": PASSWORD}));
            assert_eq!(user_of(amelie.await.unwrap()).await, "amelie1", "the older account");
        }
        let amelie2 = login(json!({"username": "amelie2", "password": PASSWORD}));
        assert_eq!(user_of(amelie2.await.unwrap()).await, "amelie2", "by username");
        for email in ["zo\u{e9}@example.test", "AME\u{301}LIE@example.test"] {
            let response = app
                .request(Method::POST, "/api/auth/signup")
                .json(&json!({
                    "username": "newcomer",
                    "email": email,
                    "password": PASSWORD,
                    "confirm_password": PASSWORD,
                }))
                .send()
                .await
                .unwrap();
            expect_problem(response, StatusCode::CONFLICT).await;
        }
        app.stop().await;

        // Starting again finds nothing left to do (the collision stays, logged) and
        // changes nothing.
        let app = TestApp::spawn_on(&database.url, |_| {}).await;
        assert_eq!(titles(&app, &alice, &[("sort_by", "title"), ("sort_order", "asc")]).await, sorted);
        app.stop().await;
    }
}

on_both_backends! {
    async fn two_instances_starting_together_back_fill_every_row_once_and_agree(backend: Backend) {
        const ROWS: i64 = 1_234; // more than two batches
        let database = OwnDatabase::new(backend).await;
        let app = TestApp::spawn_on(&database.url, |_| {}).await;
        let alice = app.signup("alice").await;
        app.stop().await;
        let insert = match backend {
            Backend::Sqlite => {
                "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at)
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
                 SELECT printf('00000000-0000-7000-8000-%012d', i), $1, 'TÍTULO ' || i, 'Ω ' || i,
                        0, i, i
                 FROM n"
            }
            Backend::Postgres => {
                "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at)
                 SELECT ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, $1,
                        'TÍTULO ' || i, 'Ω ' || i, false, now(), now()
                 FROM generate_series(1, $2::bigint) AS i"
            }
        };
        database
            .execute(insert, &[Bind::Text(Some(&alice.id)), Bind::Int(ROWS)])
            .await;

        let (first, second) = tokio::join!(
            TestApp::spawn_on(&database.url, |_| {}),
            TestApp::spawn_on(&database.url, |_| {}),
        );
        assert_eq!(
            database
                .count("SELECT count(*) FROM tasks WHERE title_key IS NULL OR description_key IS NULL")
                .await,
            0
        );
        for app in [&first, &second] {
            assert_eq!(search(app, &alice, "título 1233").await, ["TÍTULO 1233"]);
            assert_eq!(search(app, &alice, "ω 1234").await, ["TÍTULO 1234"]);
            let page = titles(app, &alice, &[("q", "título 100"), ("sort_by", "title")]).await;
            assert_eq!(page, ["TÍTULO 1009", "TÍTULO 1008", "TÍTULO 1007", "TÍTULO 1006",
                "TÍTULO 1005", "TÍTULO 1004", "TÍTULO 1003", "TÍTULO 1002", "TÍTULO 1001",
                "TÍTULO 1000", "TÍTULO 100"]);
        }
        first.stop().await;
        second.stop().await;
    }
}
