//! The planning migration on a database that already holds tasks: the schema as the previous
//! version left it (its migrations only), tasks written the previous version's way, then the
//! service started on it. Old tasks read with the defaults and take every new field, filter
//! and sort like new ones.

mod common;

use std::path::Path;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

/// The first migration of the planning fields; everything before it is the previous schema.
const PLANNING_MIGRATION: i64 = 20261130010000;

/// Applies the migrations of `backend` older than the planning one, from copies of their
/// files (same bytes, so the service later finds them applied with the same checksums).
async fn migrate_to_previous_version(backend: Backend, url: &str) {
    let folder = match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let previous = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version < PLANNING_MIGRATION {
            std::fs::copy(&path, previous.path().join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(Path::new(previous.path()))
        .await
        .unwrap();
    match backend {
        Backend::Sqlite => {
            let options = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .create_if_missing(true);
            let mut connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            migrator.run(&mut connection).await.unwrap();
            connection.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
            migrator.run(&mut connection).await.unwrap();
            connection.close().await.unwrap();
        }
    }
}

/// Inserts a task as the previous version did: no planning columns.
async fn insert_old_task(backend: Backend, url: &str, owner: &str, title: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    match backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO tasks (id, user_id, title, description, completed, created_at,
                                    updated_at, title_key, description_key)
                 VALUES ($1, $2, $3, NULL, 0, $4, $4, lower($3), NULL)",
            )
            .bind(&id)
            .bind(owner)
            .bind(title)
            .bind(now)
            .execute(&mut connection)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO tasks (id, user_id, title, description, completed, created_at,
                                    updated_at, title_key, description_key)
                 VALUES ($1::uuid, $2, $3, NULL, false, to_timestamp($4::bigint / 1000.0),
                         to_timestamp($4::bigint / 1000.0), lower($3), NULL)",
            )
            .bind(&id)
            .bind(owner)
            .bind(title)
            .bind(now)
            .execute(&mut connection)
            .await
            .unwrap();
        }
    }
    id
}

on_both_backends! {
    async fn tasks_written_before_the_planning_fields_get_their_defaults_and_every_new_feature(
        backend: Backend
    ) {
        let (url, postgres, _dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("todo.db").display());
                (url, None, Some(dir))
            }
            Backend::Postgres => {
                let (name, url) = create_test_database().await;
                (url, Some(name), None)
            }
        };
        migrate_to_previous_version(backend, &url).await;
        // The owner is a token subject; the previous version stored it as text.
        let owner = uuid::Uuid::now_v7().to_string();
        let old = insert_old_task(backend, &url, &owner, "written before").await;

        let app = TestApp::spawn_on(&url, |_| {}).await;
        let claims = json!({"sub": owner, "exp": now() + 600, "iat": now()});
        let token = hs256_token(&claims, SECRET);
        let user = TestUser {
            id: owner.clone(),
            username: String::new(),
            email: String::new(),
            password: String::new(),
            token,
        };
        // The migration counted the task already there: the kept totals include it.
        for (query, total) in [("", 1), ("completed=false", 1), ("completed=true", 0)] {
            let listing = format!("{}?{query}", TestApp::tasks_path(&user));
            let (status, page) = app.get_json(&user, &listing).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(page["total"], total, "{query}");
        }
        let path = TestApp::task_path(&user, &old);
        let (status, task) = app.get_json(&user, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(task["priority"], "medium");
        assert_eq!(task["tags"], json!([]));
        for field in ["due_at", "remind_at", "recurrence", "next_task_id"] {
            assert_eq!(task[field], Value::Null, "{field}");
        }

        // The old task takes every new field, and is found by the new filters and sorts.
        let response = app
            .authed(Method::PATCH, &path, &user.token)
            .json(&json!({
                "priority": "urgent", "tags": ["Legacy"],
                "due_at": "2027-01-04T09:00:00Z",
                "recurrence": {"frequency": "weekly"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        app.create_task(&user, json!({"title": "new", "priority": "low"})).await;
        let listing = format!(
            "{}?tag=legacy&priority=urgent&due_after=2027-01-01T00:00:00Z&sort_by=due_at",
            TestApp::tasks_path(&user)
        );
        let (status, page) = app.get_json(&user, &listing).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 1);
        assert_eq!(page["items"][0]["id"], old.as_str());
        let (_, tags) = app.get_json(&user, &format!("/api/{owner}/tags")).await;
        assert_eq!(tags, json!({"items": [{"tag": "Legacy", "open": 1, "total": 1}]}));

        // Completing it creates the next occurrence.
        let response = app
            .authed(Method::PATCH, &format!("{path}/complete"), &user.token)
            .send()
            .await
            .unwrap();
        let done: Value = response.json().await.unwrap();
        let next = done["next_task_id"].as_str().expect("a next occurrence");
        let (_, next) = app.get_json(&user, &TestApp::task_path(&user, next)).await;
        assert_eq!(next["due_at"], "2027-01-11T09:00:00.000Z");
        app.stop().await;
        if let Some(name) = postgres {
            drop_test_database(name);
        }
    }
}
