//! The users API's errors from the store: a failed validation names its field (422), a
//! taken email is a conflict, anything else from the database is a 503 (never a 500).

use crate::api::ApiError;
use crate::store::{FieldError, StoreError};

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Unprocessable {
            field: Some(e.field),
            message: format!("{}: {}", e.field, e.reason),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m.to_string()),
            other => {
                tracing::error!(error = %other, request_id = %crate::api::request_id(), "database call failed");
                ApiError::DatabaseUnavailable
            }
        }
    }
}
