//! Account domain types: usernames, emails and passwords, parsed once at the boundary.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;

use crate::{error::ApiError, extract::JsonObject, tasks::domain::rfc3339_millis, text};

/// The longest username and email any account can have.
pub const USERNAME_MAX_CHARS: usize = 32;
pub const EMAIL_MAX_BYTES: usize = 254;

/// 3–32 characters of letters, digits, `_`, `.` and `-`; unique ignoring case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: String) -> Result<Self, String> {
        let length = raw.chars().count();
        if !(3..=USERNAME_MAX_CHARS).contains(&length) {
            return Err("must be 3 to 32 characters".into());
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err("may contain only letters, digits, _, . and -".into());
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically valid address, as shown: trimmed, lower-cased and in Unicode NFC, the
/// domain as the user wrote it (`bücher.example` stays so). Uniqueness, login and look-up
/// compare its [`key`](Self::key), the canonical form [`email_key`] gives, never this text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    address: String,
    key: String,
}

impl Email {
    pub fn parse(raw: String) -> Result<Self, String> {
        const INVALID: &str = "must be a valid email address";
        let email: String = raw.trim().to_lowercase().nfc().collect();
        // Invisible characters (zero-width spaces, BOMs …) would make addresses that look
        // alike but differ; white space and controls were never allowed.
        if email.len() > EMAIL_MAX_BYTES || email.chars().any(text::is_invisible) {
            return Err(INVALID.into());
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(INVALID.into());
        };
        // The domain as DNS knows it (UTS #46 with the STD3 rules: letters, digits and
        // hyphens, punycode for the rest, DNS lengths); the label rules are checked on that.
        let domain_ok = idna::domain_to_ascii_strict(domain).is_ok_and(|ascii| {
            ascii.len() <= 253
                && ascii.contains('.')
                && ascii.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        });
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && !local.contains(['(', ')', ',', ':', ';', '<', '>', '[', ']', '\\', '"']);
        if domain_ok && local_ok {
            Ok(Self {
                key: email_key(&email),
                address: email,
            })
        } else {
            Err(INVALID.into())
        }
    }

    /// The address as shown.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The canonical form: unique among accounts, and what login looks up.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The canonical form of an email address, the one its uniqueness, login and look-up
/// compare: the local part case-folded as Unicode canonical caseless matching does (The
/// Unicode Standard, §3.13, D145: full default case folding between canonical
/// decompositions) and composed to NFC, so that NFC and NFD spellings, and any case, are one
/// address; the domain in its IDNA ASCII form (UTS #46: mapped, lower-case, punycode), so
/// that `bücher.example`, `BÜCHER.example` and `xn--bcher-kva.example` are one domain.
///
/// Total: any text gets a key (a domain IDNA refuses is case-folded like the local part),
/// so addresses stored before these rules, and login attempts with malformed ones, have one.
pub fn email_key(address: &str) -> String {
    let caseless =
        |text: &str| -> String { text.chars().nfd().default_case_fold().nfc().collect() };
    let address = address.trim();
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let domain = idna::domain_to_ascii(domain).unwrap_or_else(|_| caseless(domain));
            format!("{}@{domain}", caseless(local))
        }
        None => caseless(address),
    }
}

/// A password of 8–72 bytes (bcrypt reads at most 72). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

pub const PASSWORD_MIN_BYTES: usize = 8;
pub const PASSWORD_MAX_BYTES: usize = 72;

impl Password {
    pub fn parse(raw: String) -> Result<Self, String> {
        match raw.len() {
            n if n < PASSWORD_MIN_BYTES => {
                Err(format!("must be at least {PASSWORD_MIN_BYTES} bytes"))
            }
            n if n > PASSWORD_MAX_BYTES => Err(format!(
                "must be at most {PASSWORD_MAX_BYTES} bytes (bcrypt ignores the rest, so longer passwords are refused)"
            )),
            _ => Ok(Self(raw)),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A validated sign-up.
#[derive(Debug)]
pub struct Signup {
    pub username: Username,
    pub email: Email,
    pub password: Password,
}

impl Signup {
    pub fn from_json(mut body: JsonObject) -> Result<Self, ApiError> {
        let username = body.string("username", Username::parse);
        let username = body.required("username", username);
        let email = body.string("email", Email::parse);
        let email = body.required("email", email);
        let password = body.string("password", Password::parse);
        let password = body.required("password", password);
        let confirm = body.string("confirm_password", Ok);
        let confirm = body.required("confirm_password", confirm);
        if let (Some(password), Some(confirm)) = (&password, &confirm)
            && password.expose() != confirm
        {
            body.reject("confirm_password", "must equal password");
        }
        body.finish((|| {
            Some(Self {
                username: username?,
                email: email?,
                password: password?,
            })
        })())
    }
}

/// Who is logging in: a `username` containing `@` is read as an email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginId {
    Username(String),
    /// The address's canonical form, [`email_key`].
    Email(String),
}

/// A login attempt. The password is not checked against the sign-up rules: a wrong one is
/// simply a 401, like an unknown user.
#[derive(Debug)]
pub struct Login {
    pub id: LoginId,
    pub password: String,
}

/// Form fields that OAuth2 password-grant clients (Swagger UI among them) send besides
/// `username` and `password`.
const OAUTH2_FORM_FIELDS: [&str; 4] = ["grant_type", "scope", "client_id", "client_secret"];

impl Login {
    pub fn from_body(mut body: JsonObject, is_form: bool) -> Result<Self, ApiError> {
        if is_form {
            if let crate::extract::Field::Present(grant) = body.string("grant_type", Ok)
                && grant != "password"
            {
                body.reject("grant_type", "must be password");
            }
            for name in &OAUTH2_FORM_FIELDS[1..] {
                let _ = body.string(name, Ok);
            }
        }
        let non_empty = |text: String| {
            let text = text.trim().to_owned();
            if text.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(text)
            }
        };
        let username = body.string("username", non_empty);
        let username = body.optional("username", username);
        let email = body.string("email", non_empty);
        let email = body.optional("email", email);
        let password = body.string("password", |text| {
            if text.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(text)
            }
        });
        let password = body.required("password", password);
        let from_email = matches!(email, Some(Some(_)));
        // No account has a longer identifier: refused here, before it can key a rate limit
        // or reach the database (so its size costs nothing there). An email is measured in
        // the form sign-up bounds (trimmed, lower-cased, NFC), before its canonical key.
        let field = if from_email { "email" } else { "username" };
        let too_long = |body: &mut JsonObject, limit: String| {
            body.reject(field, limit);
            None
        };
        let email_id = |raw: &str| -> Option<LoginId> {
            let shown: String = raw.trim().to_lowercase().nfc().collect();
            (shown.len() <= EMAIL_MAX_BYTES).then(|| LoginId::Email(email_key(raw)))
        };
        let email_limit = || format!("must be at most {EMAIL_MAX_BYTES} bytes");
        let id = match (username, email) {
            (Some(Some(_)), Some(Some(_))) => {
                body.reject("email", "give either username or email, not both");
                None
            }
            (Some(None), Some(None)) => {
                body.reject("username", "username or email is required");
                None
            }
            (Some(Some(name)), Some(None)) if name.contains('@') => {
                email_id(&name).or_else(|| too_long(&mut body, email_limit()))
            }
            (Some(Some(name)), Some(None)) if name.chars().count() > USERNAME_MAX_CHARS => {
                too_long(
                    &mut body,
                    format!("must be at most {USERNAME_MAX_CHARS} characters"),
                )
            }
            (Some(Some(name)), Some(None)) => Some(LoginId::Username(name)),
            (Some(None), Some(Some(email))) => {
                email_id(&email).or_else(|| too_long(&mut body, email_limit()))
            }
            _ => None,
        };
        body.finish((|| {
            Some(Self {
                id: id?,
                password: password?,
            })
        })())
    }
}

/// A local account, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "alice@example.com")]
    pub email: String,
    #[serde(serialize_with = "rfc3339_millis")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-18T09:30:00.123Z")]
    pub created_at: DateTime<Utc>,
}

/// A local account with its password hash, for login only. Never serialised.
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
    /// Tokens are issued at this generation; see [`super::revocation`].
    pub token_generation: i64,
}

// The request types below only describe bodies for the OpenAPI document; `Deserialize` is
// derived for its `deny_unknown_fields` (`additionalProperties: false` in the document).

/// The body of `POST /api/auth/signup`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "alice", "email": "alice@example.com", "password": "correct horse", "confirm_password": "correct horse"}))]
#[allow(dead_code)]
pub struct SignupRequest {
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]{3,32}$")]
    username: String,
    #[schema(format = "email", max_length = 254)]
    email: String,
    /// 8–72 bytes (UTF-8), not characters: bcrypt reads at most 72 bytes.
    #[schema(min_length = 8, max_length = 72, format = Password)]
    password: String,
    /// Must equal `password`.
    #[schema(min_length = 8, max_length = 72, format = Password)]
    confirm_password: String,
}

/// The JSON body of `POST /api/auth/login`: `username` or `email` (exactly one), and
/// `password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "alice", "password": "correct horse"}))]
#[allow(dead_code)]
pub struct LoginRequest {
    /// A username, or an email (a value containing `@` is read as one).
    #[schema(nullable = false, min_length = 1, max_length = 254)]
    username: Option<String>,
    #[schema(nullable = false, min_length = 1, max_length = 254)]
    email: Option<String>,
    #[schema(format = Password, min_length = 1)]
    password: String,
}

/// `POST /api/auth/login` as an OAuth2 password grant (what Swagger UI's "Authorize" sends).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LoginForm {
    /// A username or an email.
    #[schema(min_length = 1, max_length = 254)]
    username: String,
    #[schema(format = Password, min_length = 1)]
    password: String,
    /// `password` when given.
    #[schema(nullable = false, pattern = "^password$")]
    grant_type: Option<String>,
    #[schema(nullable = false)]
    scope: Option<String>,
    #[schema(nullable = false)]
    client_id: Option<String>,
    #[schema(nullable = false)]
    client_secret: Option<String>,
}

/// What signup and login return.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthResponse {
    pub user: User,
    /// An HS256 JWT for `Authorization: Bearer …`.
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 86400)]
    pub expires_in: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_contract() {
        for ok in ["abc", "Alice_01", "a.b-c", &"x".repeat(32)] {
            assert!(Username::parse(ok.into()).is_ok(), "{ok}");
        }
        for bad in ["ab", "with space", "ünï", "a@b", &"x".repeat(33), ""] {
            assert!(Username::parse(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            Email::parse(" Alice@Example.COM ".into()).unwrap().as_str(),
            "alice@example.com"
        );
        for bad in [
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@@b.com",
            "a@-b.com",
        ] {
            assert!(Email::parse(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_address_has_one_key_whatever_its_spelling() {
        let nfc = Email::parse("zo\u{e9}@example.test".into()).unwrap();
        let nfd = Email::parse("zoe\u{301}@example.test".into()).unwrap();
        assert_eq!(nfc.as_str(), nfd.as_str(), "shown in NFC");
        assert_eq!(nfc.key(), nfd.key());
        assert_eq!(email_key("ZOE\u{301}@EXAMPLE.TEST"), nfc.key());
        let unicode = Email::parse("bob@b\u{fc}cher.example".into()).unwrap();
        let ascii = Email::parse("bob@xn--bcher-kva.example".into()).unwrap();
        assert_eq!(
            unicode.as_str(),
            "bob@b\u{fc}cher.example",
            "shown as written"
        );
        assert_eq!(unicode.key(), "bob@xn--bcher-kva.example");
        assert_eq!(ascii.key(), unicode.key());
        assert_eq!(email_key("BOB@B\u{dc}CHER.EXAMPLE"), unicode.key());
        // Total, for stored addresses and login attempts the parser would refuse.
        assert_eq!(email_key("No-At-Sign"), "no-at-sign");
        assert_eq!(email_key("A@B_C"), "a@b_c");
    }

    #[test]
    fn invisible_characters_make_an_address_invalid() {
        for bad in [
            "zo\u{200b}e@example.test",
            "\u{feff}a@example.test",
            "a@exa\u{ad}mple.test",
        ] {
            assert!(Email::parse(bad.into()).is_err(), "{bad:?}");
        }
        assert_eq!(
            Email::parse("\u{feff} a@example.test".into()).ok(),
            None,
            "only white space is trimmed"
        );
    }

    #[test]
    fn passwords_are_bounded_in_bytes_and_never_printed() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("é".repeat(36)).is_ok());
        assert!(Password::parse("é".repeat(37)).is_err());
        let password = Password::parse("secret-password".into()).unwrap();
        assert!(!format!("{password:?}").contains("secret"));
    }
}
