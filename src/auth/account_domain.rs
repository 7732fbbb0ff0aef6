//! The bodies of the account self-service routes, parsed once at the boundary.

use serde::Deserialize;
use utoipa::ToSchema;

use super::domain::{Email, Password, Username};
use crate::{error::ApiError, extract::JsonObject};

/// A password the user types to prove who they are: any non-empty string (a wrong one is a
/// 401, not a 400, as at login).
fn proof(text: String) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text)
    }
}

/// A validated `POST /api/auth/password`.
#[derive(Debug)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: Password,
}

impl PasswordChange {
    pub fn from_json(mut body: JsonObject) -> Result<Self, ApiError> {
        let current = body.string("current_password", proof);
        let current = body.required("current_password", current);
        let new = body.string("new_password", Password::parse);
        let new = body.required("new_password", new);
        let confirm = body.string("confirm_password", Ok);
        let confirm = body.required("confirm_password", confirm);
        if let (Some(new), Some(confirm)) = (&new, &confirm)
            && new.expose() != confirm
        {
            body.reject("confirm_password", "must equal new_password");
        }
        body.finish((|| {
            Some(Self {
                current_password: current?,
                new_password: new?,
            })
        })())
    }
}

/// A validated `PATCH /api/auth/me`: at least one of `username` and `email`.
#[derive(Debug)]
pub struct AccountChange {
    pub username: Option<Username>,
    pub email: Option<Email>,
    pub current_password: String,
}

impl AccountChange {
    pub fn from_json(mut body: JsonObject) -> Result<Self, ApiError> {
        let username = body.string("username", Username::parse);
        let username = body.optional("username", username);
        let email = body.string("email", Email::parse);
        let email = body.optional("email", email);
        let current = body.string("current_password", proof);
        let current = body.required("current_password", current);
        if matches!((&username, &email), (Some(None), Some(None))) {
            body.reject("body", "must contain at least one of username, email");
        }
        body.finish((|| {
            Some(Self {
                username: username?,
                email: email?,
                current_password: current?,
            })
        })())
    }
}

/// A validated `DELETE /api/auth/me`.
#[derive(Debug)]
pub struct AccountDeletion {
    pub password: String,
}

impl AccountDeletion {
    pub fn from_json(mut body: JsonObject) -> Result<Self, ApiError> {
        let password = body.string("password", proof);
        let password = body.required("password", password);
        body.finish(password.map(|password| Self { password }))
    }
}

// The request types below only describe bodies for the OpenAPI document.

/// The body of `POST /api/auth/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PasswordChangeRequest {
    #[schema(format = Password, min_length = 1)]
    current_password: String,
    /// 8–72 bytes (UTF-8), as at sign-up.
    #[schema(min_length = 8, max_length = 72, format = Password)]
    new_password: String,
    /// Must equal `new_password`.
    #[schema(min_length = 8, max_length = 72, format = Password)]
    confirm_password: String,
}

/// The body of `PATCH /api/auth/me`: `current_password` and at least one of `username` and
/// `email`, with the sign-up rules.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "alice@example.org", "current_password": "correct horse"}))]
#[allow(dead_code)]
pub struct AccountChangeRequest {
    #[schema(
        nullable = false,
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9_.-]{3,32}$"
    )]
    username: Option<String>,
    #[schema(nullable = false, format = "email", max_length = 254)]
    email: Option<String>,
    #[schema(format = Password, min_length = 1)]
    current_password: String,
}

/// The body of `DELETE /api/auth/me`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AccountDeletionRequest {
    #[schema(format = Password, min_length = 1)]
    password: String,
}
