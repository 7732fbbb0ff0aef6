//! Properties of the public domain parsers: whatever string or query map arrives, each one
//! either parses or says why not, never panics, and what it accepts obeys the contract.

use std::collections::{HashMap, HashSet};

use proptest::{
    collection::{hash_map, vec},
    prelude::*,
    sample::select,
};
use todo_api::{
    auth::domain::{Email, Password, Username, email_key},
    error::ApiError,
    tasks::domain::{Description, ListQuery, PAGE_MAX, SortBy, SortOrder, TaskTitle},
    text::{fold, is_invisible, trim_invisible},
};
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// Few cases for the cheap parsers, fewer for the long strings; no regression files.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Characters that sit on the edges of the rules: whitespace of several kinds, control
/// characters, NUL, multi-byte letters, case pairs that change length, and the punctuation
/// the username and email rules name.
const AWKWARD: &[char] = &[
    '\0', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}',
    '\u{2028}', '\u{3000}', '\u{feff}', ' ', 'a', 'Z', '0', '_', '.', '-', '@', '"', '\\', '%',
    'é', 'É', 'İ', 'ẞ', 'ß', 'Σ', 'ﬃ', '€', '😀', '\u{301}', '\u{2060}', '\u{fe0f}', '\u{ad}',
    '\u{3164}', '\u{2800}', 'Ж', 'ς', '\u{a8}', 'Ａ',
];

/// Arbitrary strings: printable unicode, any scalar value at all, and mixes of the awkward
/// characters above.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(any::<char>(), 0..48).prop_map(String::from_iter),
        vec(select(AWKWARD), 0..48).prop_map(String::from_iter),
        (
            vec(select(AWKWARD), 0..4),
            any::<String>(),
            vec(select(AWKWARD), 0..4)
        )
            .prop_map(|(a, b, c)| format!(
                "{}{b}{}",
                String::from_iter(a),
                String::from_iter(c)
            )),
    ]
}

/// `core` repeated `n` times, wrapped in some whitespace, with a character perhaps inserted:
/// strings whose length lies near a limit.
fn near_length(lengths: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    (
        select(vec!['x', 'é', '€', '😀', ' ', '\0']),
        lengths,
        vec(select(vec![' ', '\t', '\n', '\u{a0}', '\u{3000}']), 0..3),
        proptest::option::of((any::<prop::sample::Index>(), select(AWKWARD))),
    )
        .prop_map(|(core, n, pad, insert)| {
            let pad = String::from_iter(pad);
            let mut middle: Vec<char> = std::iter::repeat_n(core, n).collect();
            if let Some((at, c)) = insert {
                let at = if middle.is_empty() {
                    0
                } else {
                    at.index(middle.len())
                };
                middle.insert(at, c);
            }
            format!("{pad}{}{pad}", String::from_iter(middle))
        })
}

/// Strings built from the username alphabet, some with one foreign character.
fn username_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{0,40}",
        (
            "[A-Za-z0-9_.-]{0,20}",
            select(AWKWARD),
            "[A-Za-z0-9_.-]{0,20}"
        )
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
}

/// Addresses that are valid but for their case and the whitespace around them, sometimes
/// with one awkward character put somewhere.
fn email_valid_ish() -> impl Strategy<Value = String> {
    (
        "[ \t]{0,2}",
        "[A-Za-z0-9_%+-]{1,10}(\\.[A-Za-z0-9_%+-]{1,5}){0,2}",
        "[A-Za-z0-9]{1,10}(\\.[A-Za-z0-9]{1,8}){1,2}",
        "[ \t]{0,2}",
        proptest::option::weighted(0.3, (any::<prop::sample::Index>(), select(AWKWARD))),
    )
        .prop_map(|(a, local, domain, b, insert)| {
            let mut chars: Vec<char> = format!("{local}@{domain}").chars().collect();
            if let Some((at, c)) = insert {
                chars.insert(at.index(chars.len() + 1), c);
            }
            format!("{a}{}{b}", String::from_iter(chars))
        })
}

/// Strings shaped roughly like email addresses, in any case, with stray whitespace.
fn email_like() -> impl Strategy<Value = String> {
    let local = prop_oneof![
        "[A-Za-z0-9._%+-]{0,20}",
        vec(select(AWKWARD), 0..8).prop_map(String::from_iter),
        "\\PC{0,8}",
    ];
    let domain = prop_oneof![
        "[A-Za-z0-9-]{0,12}(\\.[A-Za-z0-9-]{0,8}){0,3}",
        "\\PC{0,6}\\.[a-zA-Z]{2,4}",
        vec(select(AWKWARD), 0..8).prop_map(String::from_iter),
    ];
    (
        "[ \t]{0,2}",
        local,
        select(vec!["@", "@", "@", "@@", ""]),
        domain,
        "[ \t]{0,2}",
    )
        .prop_map(|(a, local, at, domain, b)| format!("{a}{local}{at}{domain}{b}"))
}

/// Strings whose byte length lies around 8 and 72, in one- to four-byte characters.
fn password_like() -> impl Strategy<Value = String> {
    (select(vec!['a', 'é', '€', '😀', '\0', ' ']), 0..80usize)
        .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect())
}

fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_title_parses_exactly_when_trimmed_it_has_1_to_255_characters_and_no_nul(
        raw in prop_oneof![any_text(), near_length(250..=260), near_length(0..=2)]
    ) {
        let trimmed = trim_invisible(&raw);
        let acceptable = (1..=255).contains(&trimmed.chars().count()) && !raw.contains('\0');
        match TaskTitle::parse(raw.clone()) {
            Ok(title) => {
                prop_assert!(acceptable, "accepted {raw:?}");
                prop_assert_eq!(title.as_str(), trimmed);
                prop_assert!(raw.contains(title.as_str()), "a part of what was sent");
                // It starts and ends with something that shows (a space may start it only as
                // the base of a combining mark: grapheme clusters are trimmed whole).
                let clusters: Vec<&str> = title.as_str().graphemes(true).collect();
                for edge in [clusters.first(), clusters.last()] {
                    let edge = edge.expect("not empty");
                    prop_assert!(!edge.chars().all(is_invisible), "{edge:?} in {raw:?}");
                }
                let chars = title.as_str().chars().count();
                prop_assert!((1..=255).contains(&chars));
                prop_assert!(!title.as_str().contains('\0'));
            }
            Err(message) => {
                prop_assert!(!acceptable, "refused {raw:?}: {message}");
                prop_assert!(!message.is_empty());
            }
        }
    }

    #[test]
    fn a_username_parses_exactly_when_it_has_3_to_32_allowed_characters(
        raw in prop_oneof![any_text(), username_like()]
    ) {
        let acceptable =
            (3..=32).contains(&raw.chars().count()) && raw.chars().all(is_username_char);
        match Username::parse(raw.clone()) {
            Ok(name) => {
                prop_assert!(acceptable, "accepted {raw:?}");
                prop_assert_eq!(name.as_str(), raw.as_str(), "kept as written");
                prop_assert!((3..=32).contains(&name.as_str().len()));
                prop_assert!(name.as_str().chars().all(is_username_char));
            }
            Err(message) => {
                prop_assert!(!acceptable, "refused {raw:?}: {message}");
                prop_assert!(!message.is_empty());
            }
        }
    }

    #[test]
    fn an_accepted_email_is_trimmed_lower_cased_and_has_one_at_between_two_parts(
        raw in prop_oneof![any_text(), email_like(), email_valid_ish()]
    ) {
        match Email::parse(raw.clone()) {
            Ok(email) => {
                let value = email.as_str();
                let expected: String = raw.trim().to_lowercase().nfc().collect();
                prop_assert_eq!(value, expected, "from {:?}", raw);
                prop_assert_eq!(value, value.to_lowercase(), "lower-cased");
                prop_assert!(value.len() <= 254);
                prop_assert!(!value.chars().any(is_invisible), "{value:?}");
                prop_assert_eq!(value.matches('@').count(), 1, "{}", value);
                let (local, domain) = value.split_once('@').unwrap();
                prop_assert!(!local.is_empty() && !domain.is_empty(), "{value:?}");
                prop_assert!(domain.contains('.'), "{value:?}");
                // Parsing what was accepted gives it back unchanged.
                let again = Email::parse(value.to_owned());
                prop_assert_eq!(again.as_ref().map(Email::as_str), Ok(value));
                // One key whatever the spelling: NFD, ASCII capitals, the key itself.
                let key = email.key();
                prop_assert_eq!(email_key(value), key);
                let nfd: String = raw.nfd().collect();
                let nfd = Email::parse(nfd);
                prop_assert_eq!(nfd.as_ref().map(Email::key), Ok(key));
                prop_assert_eq!(email_key(&value.to_ascii_uppercase()), key);
                prop_assert_eq!(email_key(key), key, "canonical");
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    #[test]
    fn a_password_parses_exactly_when_it_has_8_to_72_bytes(
        raw in prop_oneof![any_text(), password_like()]
    ) {
        let acceptable = (8..=72).contains(&raw.len());
        match Password::parse(raw.clone()) {
            Ok(password) => {
                prop_assert!(acceptable, "accepted {} bytes", raw.len());
                prop_assert_eq!(password.expose(), raw.as_str(), "kept as written, never cut");
                // The value never shows up in debug output.
                if raw.len() >= 8 && !raw.contains("Password") && !raw.contains('*') {
                    let shown = format!("{password:?}");
                    prop_assert!(!shown.contains(raw.as_str()), "{}", shown);
                }
            }
            Err(message) => {
                prop_assert!(!acceptable, "refused {} bytes: {message}", raw.len());
                prop_assert!(!message.is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn a_description_parses_exactly_when_it_has_at_most_10000_characters_and_no_nul(
        raw in prop_oneof![any_text(), near_length(9_995..=10_005)]
    ) {
        let acceptable = raw.chars().count() <= 10_000 && !raw.contains('\0');
        match Description::parse(raw.clone()) {
            Ok(description) => {
                prop_assert!(acceptable, "accepted {} characters", raw.chars().count());
                prop_assert_eq!(description.as_str(), raw.as_str(), "kept as written");
            }
            Err(message) => {
                prop_assert!(!acceptable, "refused {} characters: {message}", raw.chars().count());
                prop_assert!(!message.is_empty());
            }
        }
    }
}

// Listing queries.

const KNOWN_KEYS: [&str; 6] = [
    "page",
    "page_size",
    "sort_by",
    "sort_order",
    "completed",
    "q",
];

/// Values that are valid for some key, near-misses, and arbitrary text.
fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "1",
            "2",
            "10",
            "20",
            "100",
            "101",
            "1000",
            "0",
            "-1",
            "+1",
            "+",
            "01",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "4294967295",
            "4294967296",
            "18446744073709551616",
            "",
            "created_at",
            "updated_at",
            "title",
            "completed",
            "password",
            "CREATED_AT",
            "asc",
            "desc",
            "ASC",
            "up",
            "true",
            "false",
            "True",
            "1",
            "yes",
            "milk",
            "  milk  ",
            "50%_off\\",
            "\0",
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,12}",
        "[+-]?[0-9]{0,3}",
        any_text(),
        near_length(254..=257),
    ]
}

/// A value that is valid for `key` (for `page_size`, when the maximum is at least 100).
fn valid_value_for(key: &'static str) -> BoxedStrategy<String> {
    match key {
        "page" => (1..=PAGE_MAX).prop_map(|n| n.to_string()).boxed(),
        "page_size" => (1..=100u32).prop_map(|n| n.to_string()).boxed(),
        "sort_by" => select(vec!["created_at", "updated_at", "title", "completed"])
            .prop_map(str::to_owned)
            .boxed(),
        "sort_order" => select(vec!["asc", "desc"]).prop_map(str::to_owned).boxed(),
        "completed" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        _ => "\\PC{0,30}".boxed(),
    }
}

/// Known keys with values that are mostly valid for them: the maps that do parse.
fn mostly_valid_query_map() -> impl Strategy<Value = HashMap<String, String>> {
    vec(
        select(KNOWN_KEYS.to_vec()).prop_flat_map(|key| {
            (
                Just(key.to_owned()),
                prop_oneof![6 => valid_value_for(key), 1 => query_value()],
            )
        }),
        0..7,
    )
    .prop_map(HashMap::from_iter)
}

/// Maps with known keys, arbitrary keys, and known keys that differ only in case.
fn random_query_map() -> impl Strategy<Value = HashMap<String, String>> {
    let key = prop_oneof![
        4 => select(KNOWN_KEYS.to_vec()).prop_map(str::to_owned),
        1 => select(vec!["Page", "PAGE_SIZE", "sort", "page ", "", "colour"]).prop_map(str::to_owned),
        1 => any_text(),
    ];
    hash_map(key, query_value(), 0..8)
}

fn query_map() -> impl Strategy<Value = HashMap<String, String>> {
    prop_oneof![random_query_map(), mostly_valid_query_map()]
}

fn max_page_size() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 1..=1000u32,
        1 => select(vec![0, 1, 19, 20, 21, 100, u32::MAX]),
    ]
}

/// The number in `value` if it is only digits (no sign) within `min..=max`.
fn number_in(value: &str, min: u32, max: u32) -> Option<u32> {
    let digits = value;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only overflow can make this parse fail.
    let n: u128 = digits.parse().unwrap_or(u128::MAX);
    u32::try_from(n).ok().filter(|n| (min..=max).contains(n))
}

/// What the contract makes of one query parameter: `None` when it must be refused.
#[derive(Debug, PartialEq)]
enum Expected {
    Page(u32),
    PageSize(u32),
    SortBy(SortBy),
    SortOrder(SortOrder),
    Completed(bool),
    Q(Option<String>),
}

fn expected(key: &str, value: &str, max_page_size: u32) -> Option<Expected> {
    match key {
        "page" => number_in(value, 1, PAGE_MAX).map(Expected::Page),
        // A maximum of 0 (the setting itself is 1 to 1000) is taken as 1: pages of one.
        "page_size" => number_in(value, 1, max_page_size.max(1)).map(Expected::PageSize),
        "sort_by" => match value {
            "created_at" => Some(SortBy::CreatedAt),
            "updated_at" => Some(SortBy::UpdatedAt),
            "title" => Some(SortBy::Title),
            "completed" => Some(SortBy::Completed),
            _ => None,
        }
        .map(Expected::SortBy),
        "sort_order" => match value {
            "asc" => Some(SortOrder::Asc),
            "desc" => Some(SortOrder::Desc),
            _ => None,
        }
        .map(Expected::SortOrder),
        "completed" => match value {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
        .map(Expected::Completed),
        "q" => {
            let text = trim_invisible(value);
            let folded = fold(text);
            (text.chars().count() <= 255 && !value.contains('\0'))
                .then(|| Expected::Q((!folded.is_empty()).then_some(folded)))
        }
        _ => None,
    }
}

fn error_fields(error: &ApiError) -> Vec<String> {
    match error {
        ApiError::Validation { errors, .. } => errors.iter().map(|e| e.field.clone()).collect(),
        other => panic!("a bad query is a validation error, not {other:?}"),
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_query_parses_exactly_when_every_key_is_known_and_every_value_valid(
        params in query_map(),
        max in max_page_size(),
    ) {
        let verdicts: Vec<(String, Option<Expected>)> = params
            .iter()
            .map(|(key, value)| (key.clone(), expected(key, value, max)))
            .collect();
        let mut refused: Vec<String> = verdicts
            .iter()
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        refused.sort();
        match ListQuery::parse(params.clone(), max) {
            Ok(query) => {
                prop_assert!(refused.is_empty(), "accepted {params:?} (max {max}) despite {refused:?}");
                prop_assert!(query.page >= 1);
                prop_assert!(query.page_size >= 1);
                let q = query.q.as_ref().map(|q| q.as_str().to_owned());
                if let Some(text) = &q {
                    // Folded (so `¨` may become a space and a combining diaeresis), and
                    // folding again changes nothing.
                    prop_assert!(!text.is_empty() && !text.contains('\0'));
                    prop_assert_eq!(&fold(text), text);
                }
                for (_, verdict) in verdicts {
                    let actual = match verdict.as_ref().expect("no refusals") {
                        Expected::Page(_) => Expected::Page(query.page),
                        Expected::PageSize(_) => Expected::PageSize(query.page_size),
                        Expected::SortBy(_) => Expected::SortBy(query.sort_by),
                        Expected::SortOrder(_) => Expected::SortOrder(query.sort_order),
                        Expected::Completed(_) => Expected::Completed(query.completed.expect("given")),
                        Expected::Q(_) => Expected::Q(q.clone()),
                    };
                    prop_assert_eq!(Some(actual), verdict);
                }
                // What was not given takes its documented default.
                let given = |key: &str| params.contains_key(key);
                if !given("page") { prop_assert_eq!(query.page, 1); }
                if !given("sort_by") { prop_assert_eq!(query.sort_by, SortBy::CreatedAt); }
                if !given("sort_order") { prop_assert_eq!(query.sort_order, SortOrder::Desc); }
                if !given("completed") { prop_assert_eq!(query.completed, None); }
                if !given("q") { prop_assert!(query.q.is_none()); }
            }
            Err(error) => {
                prop_assert!(!refused.is_empty(), "refused {params:?} (max {max}): {error:?}");
                let mut fields = error_fields(&error);
                fields.sort();
                prop_assert_eq!(fields, refused, "every bad parameter named, and only those");
            }
        }
    }

    #[test]
    fn valid_values_for_known_keys_always_parse(
        page in 1..=PAGE_MAX,
        max in 1..=1000u32,
        size_seed in any::<prop::sample::Index>(),
        sort_by in select(vec!["created_at", "updated_at", "title", "completed"]),
        sort_order in select(vec!["asc", "desc"]),
        completed in any::<bool>(),
        q in "\\PC{0,40}",
        keep in vec(any::<bool>(), 6),
    ) {
        let page_size = 1 + size_seed.index(max as usize) as u32;
        let values = [
            page.to_string(),
            page_size.to_string(),
            sort_by.to_owned(),
            sort_order.to_owned(),
            completed.to_string(),
            q.clone(),
        ];
        let params: HashMap<String, String> = KNOWN_KEYS
            .iter()
            .zip(values)
            .zip(&keep)
            .filter(|(_, keep)| **keep)
            .map(|((key, value), _)| ((*key).to_owned(), value))
            .collect();
        let query = ListQuery::parse(params.clone(), max);
        prop_assert!(query.is_ok(), "{params:?} (max {max}): {query:?}");
        let query = query.unwrap();
        if keep[0] { prop_assert_eq!(query.page, page); }
        if keep[1] { prop_assert_eq!(query.page_size, page_size); }
        if keep[4] { prop_assert_eq!(query.completed, Some(completed)); }
        if keep[5] {
            let folded = fold(trim_invisible(&q));
            prop_assert_eq!(query.q.as_ref().map(|q| q.as_str()), (!folded.is_empty()).then_some(folded.as_str()));
        }
    }

    #[test]
    fn a_parsed_query_never_has_a_page_size_above_the_maximum(
        params in prop_oneof![Just(HashMap::new()), query_map()],
        max in prop_oneof![1..=30u32, 1..=1000u32],
    ) {
        if let Ok(query) = ListQuery::parse(params.clone(), max) {
            prop_assert!(query.page >= 1);
            prop_assert!(
                (1..=max).contains(&query.page_size),
                "page_size {} with max_page_size {max} from {params:?}",
                query.page_size
            );
        }
    }

    #[test]
    fn unknown_keys_are_each_named(
        keys in hash_map("\\PC{0,12}", query_value(), 1..6),
    ) {
        let unknown: HashSet<String> = keys
            .keys()
            .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
            .cloned()
            .collect();
        match ListQuery::parse(keys.clone(), 100) {
            Ok(_) => prop_assert!(unknown.is_empty()),
            Err(error) => {
                let fields: HashSet<String> = error_fields(&error).into_iter().collect();
                prop_assert!(unknown.is_subset(&fields), "{unknown:?} not all in {fields:?}");
            }
        }
    }
}

// The folded key that search and title sorting compare (src/text.rs).

/// Text in the cased scripts: Latin (with its extensions), Greek, Cyrillic, Armenian, and
/// the awkward characters.
fn cased_text() -> impl Strategy<Value = String> {
    let letter = prop_oneof![
        proptest::char::range('\u{20}', '\u{24f}'),
        proptest::char::range('\u{370}', '\u{3ff}'),
        proptest::char::range('\u{400}', '\u{52f}'),
        proptest::char::range('\u{531}', '\u{587}'),
        proptest::char::range('\u{1e00}', '\u{1fff}'),
        select(AWKWARD),
    ];
    vec(letter, 0..32).prop_map(String::from_iter)
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn folding_is_idempotent_and_blind_to_case_form_and_invisible_characters(
        raw in any_text()
    ) {
        let key = fold(&raw);
        prop_assert_eq!(&fold(&key), &key, "idempotent");
        let nfd: String = raw.nfd().collect();
        let nfc: String = raw.nfc().collect();
        prop_assert_eq!(&fold(&nfd), &key, "NFD spelling");
        prop_assert_eq!(&fold(&nfc), &key, "NFC spelling");
        let without_zero_width: String = raw.chars().filter(|&c| c != '\u{200b}' && c != '\u{2060}').collect();
        prop_assert_eq!(&fold(&without_zero_width), &key, "zero-width characters");
        prop_assert!(!key.bytes().any(|b| b.is_ascii_uppercase()), "no ASCII capital: {key:?}");
    }

    #[test]
    fn folding_ignores_upper_and_lower_case_in_the_cased_scripts(raw in cased_text()) {
        // Over letters whose case the folding's Unicode version (caseless: 16.0) and Rust's
        // both know: the standard library may know newer capitals. Two exceptions that
        // Unicode itself makes: the dotless ı, which the default (non-Turkic) folding keeps
        // apart from the I it upper-cases to, and the Greek iota subscript (U+0345, also
        // inside ᾳ, ᾀ …), which upper-cases to a separate capital iota that the combining
        // marks after it then sit on.
        let key = fold(&raw);
        if !raw.contains('ı') && !raw.nfd().any(|c| c == '\u{345}') {
            prop_assert_eq!(&fold(&raw.to_uppercase()), &key, "upper-cased");
        }
        prop_assert_eq!(&fold(&raw.to_lowercase()), &key, "lower-cased");
    }

    #[test]
    fn a_fold_of_a_part_is_a_part_of_the_fold(
        (a, b, c) in (any_text(), "[a-zA-Z0-9 ]{1,8}", any_text())
    ) {
        // What `q` relies on: the key of a text contains the key of an ASCII word in it.
        let whole = format!("{a} {b} {c}");
        prop_assert!(fold(&whole).contains(&fold(&b)), "{whole:?} / {b:?}");
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn response_bodies_escape_every_string_as_serde_json_does(
        raw in prop_oneof![any_text(), any::<String>(), "[\\x00-\\x7f]{0,64}"]
    ) {
        // Task bodies are written by sonic-rs (src/tasks/routes.rs `JsonResponse`); what
        // they hold must read back exactly, escaped the way every other body is.
        let ours = sonic_rs::to_string(&raw).unwrap();
        prop_assert_eq!(&ours, &serde_json::to_string(&raw).unwrap());
        prop_assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), raw);
    }
}
