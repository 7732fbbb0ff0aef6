//! The documentation travels with the code: every link of the README and `docs/` resolves
//! inside the repository (so in a fresh clone), the README's settings table is the one
//! `--help` prints, and `docs/API.md`'s route table is exactly the operations of
//! `/openapi.json`.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use todo_api::config::reference::SETTINGS;

/// The Markdown files a newcomer reads.
const DOCUMENTS: [&str; 3] = ["README.md", "docs/API.md", "bench/README.md"];

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repository().join(relative))
        .unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// The targets of `[text](target)` links, outside code blocks and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        // Code spans may hold `](` that is not a link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(index, _)| index % 2 == 0)
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let end = after.find(')').expect("a link is closed on its line");
            targets.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case; letters, digits, `-` and `_` kept, spaces to
/// `-`, everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_block = false;
    let mut found = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block && line.starts_with('#') {
            found.insert(slug(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_documentation_link_resolves_inside_the_repository() {
    let root = repository().canonicalize().unwrap();
    for document in DOCUMENTS {
        let text = read(document);
        let directory = Path::new(document).parent().unwrap();
        for target in link_targets(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                root.join(document)
            } else {
                let joined = root.join(directory).join(path);
                joined
                    .canonicalize()
                    .unwrap_or_else(|_| panic!("{document}: link {target} names nothing"))
            };
            assert!(
                file.starts_with(&root),
                "{document}: link {target} leaves the repository"
            );
            if let Some(anchor) = anchor {
                let linked = std::fs::read_to_string(&file).unwrap();
                assert!(
                    anchors(&linked).contains(anchor),
                    "{document}: link {target}: no such heading in {}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_readme_names_nothing_outside_the_repository() {
    let readme = read("README.md");
    for outside in ["../", "/work/", "shared/API.md", "file://"] {
        assert!(
            !readme.contains(outside),
            "the README refers to {outside:?}, which a clone does not have"
        );
    }
    assert!(
        readme.contains("(docs/API.md)"),
        "the README links the API reference"
    );
}

#[test]
fn the_readme_configuration_table_is_the_settings_table() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section");
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with("| variable |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    let expected: Vec<String> = SETTINGS
        .iter()
        .map(|setting| setting.markdown_row())
        .collect();
    assert!(
        rows == expected,
        "the README's configuration table differs from src/config/reference.rs; the rows \
         should read:\n{}",
        expected.join("\n")
    );
}

/// `METHOD /path` of every operation in the OpenAPI document.
fn operations(document: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.get(method).is_some() {
                found.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    found
}

/// The routes of the first column of the table under `heading`, from their code spans
/// (`` `GET /health` ``, `` `GET /health`, `GET /ready` ``).
fn route_table(markdown: &str, heading: &str) -> BTreeSet<String> {
    let section = markdown
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {heading:?} section"));
    section
        .lines()
        .skip_while(|line| !line.starts_with("| route |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .flat_map(|line| {
            let cell = line.split('|').nth(1).unwrap();
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_api_reference_routes_are_the_operations_of_the_openapi_document() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    let documented = operations(&document);
    assert!(documented.contains("PATCH /api/{user_id}/tasks/{id}/complete"));

    let reference = read("docs/API.md");
    let table = route_table(&reference, "## Routes");
    assert_eq!(
        table, documented,
        "docs/API.md's route table and /openapi.json disagree"
    );
    for operation in &documented {
        assert!(reference.contains(&format!("`{operation}")), "{operation}");
    }

    // The README's summary names only real routes (and the two that serve the document).
    let readme = route_table(&read("README.md"), "## The API at a glance");
    let mut known = documented.clone();
    known.extend(["GET /openapi.json".to_owned(), "GET /docs".to_owned()]);
    let unknown: Vec<&String> = readme.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "the README lists routes that do not exist: {unknown:?}"
    );
}

on_both_databases! {
    async fn swagger_ui_names_the_api_in_its_page_title(app: TestApp) {
        let document: Value = app
            .request(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let title = document["info"]["title"].as_str().unwrap().to_owned();
        let response = app.request(Method::GET, "/docs/").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let page = response.text().await.unwrap();
        assert_eq!(page.len(), length);
        assert!(
            page.contains(&format!("<title>{title} — Swagger UI</title>")),
            "{page}"
        );
    }
}
