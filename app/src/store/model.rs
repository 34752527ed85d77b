//! The users resource: rows, and validated inputs (a `NewUser` or `UserPatch` that exists
//! has passed validation).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stored user. Timestamps are Unix milliseconds, the same in SQLite and PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The body of `POST /users` as sent; [`NewUser::try_from`] validates it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 1-100 characters, not all blank (trimmed).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    /// `local@domain` without blanks, at most 254 bytes (stored lower-case).
    #[schema(max_length = 254, pattern = r"^[^@\s]+@[^@\s]+$")]
    pub email: String,
}

/// The body of `PATCH`/`PUT /users/{id}`: any subset of the fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// As in `CreateUserRequest`.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: Option<String>,
    /// As in `CreateUserRequest`.
    #[schema(max_length = 254, pattern = r"^[^@\s]+@[^@\s]+$")]
    pub email: Option<String>,
}

/// A field that failed validation and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    name: String,
    email: String,
}

impl NewUser {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn email(&self) -> &str {
        &self.email
    }
}

#[derive(Debug, Clone)]
pub struct UserPatch {
    name: Option<String>,
    email: Option<String>,
}

impl UserPatch {
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
}

const MAX_NAME: usize = 100;
const MAX_EMAIL: usize = 254;

fn check_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(FieldError {
            field: "name",
            reason: "must not be empty",
        });
    }
    if name.chars().count() > MAX_NAME {
        return Err(FieldError {
            field: "name",
            reason: "must be at most 100 characters",
        });
    }
    Ok(name.to_string())
}

fn check_email(email: &str) -> Result<String, FieldError> {
    let email = email.trim();
    let valid_shape = match email.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    };
    if !valid_shape || email.contains(char::is_whitespace) {
        return Err(FieldError {
            field: "email",
            reason: "must look like local@domain",
        });
    }
    if email.len() > MAX_EMAIL {
        return Err(FieldError {
            field: "email",
            reason: "must be at most 254 bytes",
        });
    }
    Ok(email.to_ascii_lowercase())
}

impl TryFrom<CreateUserRequest> for NewUser {
    type Error = FieldError;
    fn try_from(r: CreateUserRequest) -> Result<Self, FieldError> {
        Ok(Self {
            name: check_name(&r.name)?,
            email: check_email(&r.email)?,
        })
    }
}

impl TryFrom<UpdateUserRequest> for UserPatch {
    type Error = FieldError;
    fn try_from(r: UpdateUserRequest) -> Result<Self, FieldError> {
        if r.name.is_none() && r.email.is_none() {
            return Err(FieldError {
                field: "body",
                reason: "give at least one of name, email",
            });
        }
        Ok(Self {
            name: r.name.as_deref().map(check_name).transpose()?,
            email: r.email.as_deref().map(check_email).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = NewUser::try_from(CreateUserRequest {
            name: " Ann ".into(),
            email: "A@x.io".into(),
        })
        .unwrap();
        assert_eq!((ok.name(), ok.email()), ("Ann", "a@x.io"));
        let e = NewUser::try_from(CreateUserRequest {
            name: "".into(),
            email: "a@x".into(),
        })
        .unwrap_err();
        assert_eq!(e.field, "name");
        let e = NewUser::try_from(CreateUserRequest {
            name: "a".into(),
            email: "ax".into(),
        })
        .unwrap_err();
        assert_eq!(e.field, "email");
        let e = UserPatch::try_from(UpdateUserRequest {
            name: None,
            email: None,
        })
        .unwrap_err();
        assert_eq!(e.field, "body");
    }
}
