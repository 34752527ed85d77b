//! The users resource: create, read (through the cache), update, delete, paged list.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorCode};
use crate::cache::{Cached, Key};
use crate::state::AppState;
use crate::store::{CreateUserRequest, NewUser, UpdateUserRequest, User, UserPatch};

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

fn check_id(id: i64) -> Result<i64, ApiError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidId,
            "id must be a positive integer",
        ))
    }
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// One user (through the cache).
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "the user's id", minimum = 1)),
    responses(
        (status = OK, description = "the user", body = User),
        (status = BAD_REQUEST, description = "`invalid_id`: not a positive integer", body = ErrorBody),
        (status = NOT_FOUND, description = "no such user", body = ErrorBody),
    ))]
pub async fn get_user(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let id = check_id(id)?;
    let store = st.store.clone();
    let loaded = st
        .cache
        .get(Key::user(id), || async move {
            let user = store.get_user(id).await?;
            Ok(user.map(|u| Bytes::from(serde_json::to_vec(&u).unwrap_or_default())))
        })
        .await;
    match loaded {
        Ok(Cached::Found(body)) => Ok(json_bytes(StatusCode::OK, body)),
        Ok(Cached::Missing) => Err(ApiError::NotFound("user not found".into())),
        Err(e) => {
            tracing::error!(error = %e, id, request_id = %crate::api::request_id(), "loading user failed");
            Err(ApiError::DatabaseUnavailable)
        }
    }
}

/// Creates a user; `Location` names it.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUserRequest,
    responses(
        (status = CREATED, description = "the new user", body = User,
            headers(("Location" = String, description = "/users/{id}"))),
        (status = CONFLICT, description = "the email is taken", body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "a field the rules refuse (`field` names it)", body = ErrorBody),
    ))]
pub async fn create_user(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<Response, ApiError> {
    let new = NewUser::try_from(req)?;
    let user = st.store.create_user(&new).await?;
    st.cache.created(Key::user(user.id)).await;
    let mut r = (StatusCode::CREATED, Json(&user)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/users/{}", user.id)) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// Changes any of a user's fields (`PUT` and `PATCH` alike).
#[utoipa::path(method(put, patch), path = "/users/{id}", tag = "users",
    request_body = UpdateUserRequest,
    params(("id" = i64, Path, description = "the user's id", minimum = 1)),
    responses(
        (status = OK, description = "the changed user", body = User),
        (status = BAD_REQUEST, description = "`invalid_id`: not a positive integer", body = ErrorBody),
        (status = NOT_FOUND, description = "no such user", body = ErrorBody),
        (status = CONFLICT, description = "the email is taken", body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "a field the rules refuse (`field` names it)", body = ErrorBody),
    ))]
pub async fn update_user(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<User>, ApiError> {
    let id = check_id(id)?;
    let patch = UserPatch::try_from(req)?;
    let user = st
        .store
        .update_user(id, &patch)
        .await?
        .ok_or_else(|| ApiError::NotFound("user not found".into()))?;
    st.cache.invalidate(Key::user(id)).await;
    Ok(Json(user))
}

/// Deletes a user.
#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "the user's id", minimum = 1)),
    responses(
        (status = NO_CONTENT, description = "deleted"),
        (status = BAD_REQUEST, description = "`invalid_id`: not a positive integer", body = ErrorBody),
        (status = NOT_FOUND, description = "no such user", body = ErrorBody),
    ))]
pub async fn delete_user(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let id = check_id(id)?;
    if !st.store.delete_user(id).await? {
        return Err(ApiError::NotFound("user not found".into()));
    }
    st.cache.invalidate(Key::user(id)).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Return users with an id greater than this (the previous page's `next_after`).
    after: Option<i64>,
    /// Users per page, 20 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of users, by id.
#[derive(Serialize, ToSchema)]
pub struct Page {
    items: Vec<User>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<i64>,
}

/// Users by id, a page at a time.
#[utoipa::path(get, path = "/users", tag = "users", params(ListQuery),
    responses(
        (status = OK, description = "a page of users", body = Page),
        (status = BAD_REQUEST, description = "`invalid_query`: an unknown parameter, or a limit out of range", body = ErrorBody),
    ))]
pub async fn list_users(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let items = st.store.list_users(q.after.unwrap_or(0), limit).await?;
    let next_after = if items.len() == limit as usize {
        items.last().map(|u| u.id)
    } else {
        None
    };
    Ok(Json(Page { items, next_after }))
}
