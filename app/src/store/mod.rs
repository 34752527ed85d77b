//! The database behind the cache: sqlx over SQLite (default, one file) or PostgreSQL
//! (several instances share one), chosen by the URL, with embedded migrations.

mod model;
mod pool;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use model::{CreateUserRequest, FieldError, NewUser, UpdateUserRequest, User, UserPatch};
pub use pool::PoolMetrics;

use crate::config::{DatabaseConfig, DatabaseKind};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database config: {0}")]
    Config(String),
    /// A unique constraint (the email) refused the write.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    fn from_write(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict("email already in use")
            }
            _ => StoreError::Database(e),
        }
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    metrics: PoolMetrics,
}

/// Runs the same query text on a connection of whichever pool this is (`$N` placeholders
/// work in both). The connection is taken through [`PoolMetrics::acquire`], so the wait for
/// it and the time it is held show in the pool's series.
macro_rules! on_conn {
    ($self:expr, $conn:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite(p) => {
                let mut held = $self.metrics.acquire(p.acquire()).await?;
                let $conn = &mut *held.conn;
                $body
            }
            Pool::Postgres(p) => {
                let mut held = $self.metrics.acquire(p.acquire()).await?;
                let $conn = &mut *held.conn;
                $body
            }
        }
    };
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const USER_COLUMNS: &str = "id, name, email, created_at, updated_at";

impl Store {
    /// Connects and runs the migrations. Several instances may do so at once: PostgreSQL
    /// migrations take an advisory lock, and SQLite serialises writers. `metrics` receive the
    /// pool's saturation.
    pub async fn connect(cfg: &DatabaseConfig, metrics: PoolMetrics) -> Result<Self, StoreError> {
        let kind = cfg.kind().map_err(|e| StoreError::Config(e.to_string()))?;
        let pool = match kind {
            DatabaseKind::Sqlite => {
                let in_memory = cfg.url.contains(":memory:");
                let opts = SqliteConnectOptions::from_str(&cfg.url)
                    .map_err(|e| StoreError::Config(format!("database.url: {e}")))?
                    .create_if_missing(true)
                    .journal_mode(if in_memory {
                        SqliteJournalMode::Memory
                    } else {
                        SqliteJournalMode::Wal
                    })
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5));
                // An in-memory database exists per connection: keep exactly one.
                let max = if in_memory { 1 } else { cfg.max_connections };
                metrics.set_max(max);
                let pool = SqlitePoolOptions::new()
                    // A connection to a local file cannot be cut off, and sqlx's ping before
                    // each acquire was a round trip to the connection's thread per query
                    // (1.5 ms of acquire wait per read under load, with half the pool idle).
                    .test_before_acquire(false)
                    .max_connections(max)
                    .acquire_timeout(cfg.connect_timeout())
                    .connect_with(opts)
                    .await?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                Pool::Sqlite(pool)
            }
            DatabaseKind::Postgres => {
                let opts = PgConnectOptions::from_str(&cfg.url)
                    .map_err(|e| StoreError::Config(format!("database.url: {e}")))?;
                metrics.set_max(cfg.max_connections);
                let pool = PgPoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .acquire_timeout(cfg.connect_timeout())
                    .connect_with(opts)
                    .await?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self { pool, metrics })
    }

    pub fn kind(&self) -> DatabaseKind {
        match self.pool {
            Pool::Sqlite(_) => DatabaseKind::Sqlite,
            Pool::Postgres(_) => DatabaseKind::Postgres,
        }
    }

    /// One round trip to the database (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_conn!(self, c => { sqlx::query("SELECT 1").execute(c).await?; });
        Ok(())
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row =
            on_conn!(self, c => sqlx::query_as::<_, User>(&sql).bind(id).fetch_optional(c).await?);
        Ok(row)
    }

    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO users (name, email, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING {USER_COLUMNS}"
        );
        let user = on_conn!(self, c => sqlx::query_as::<_, User>(&sql)
            .bind(new.name())
            .bind(new.email())
            .bind(now)
            .fetch_one(c)
            .await
            .map_err(StoreError::from_write)?);
        Ok(user)
    }

    /// Applies `patch`; `None` when there is no such user.
    pub async fn update_user(
        &self,
        id: i64,
        patch: &UserPatch,
    ) -> Result<Option<User>, StoreError> {
        let sql = format!(
            "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), updated_at = $4 \
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        let user = on_conn!(self, c => sqlx::query_as::<_, User>(&sql)
            .bind(id)
            .bind(patch.name())
            .bind(patch.email())
            .bind(now_ms())
            .fetch_optional(c)
            .await
            .map_err(StoreError::from_write)?);
        Ok(user)
    }

    /// Deletes a user; false when there was none.
    pub async fn delete_user(&self, id: i64) -> Result<bool, StoreError> {
        let n = on_conn!(self, c => sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(c).await?.rows_affected());
        Ok(n > 0)
    }

    /// Users with an id above `after`, in id order (keyset paging: stable under inserts).
    pub async fn list_users(&self, after: i64, limit: u32) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = on_conn!(self, c => sqlx::query_as::<_, User>(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?);
        Ok(rows)
    }

    /// Ids above `after`, in order, at most `limit` (rebuilding the Bloom filter in batches).
    pub async fn user_ids(&self, after: i64, limit: u32) -> Result<Vec<i64>, StoreError> {
        let ids = on_conn!(self, c => sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?);
        Ok(ids)
    }

    /// The `limit` highest ids (the Bloom keeper re-checks the newest records).
    pub async fn newest_user_ids(&self, limit: u32) -> Result<Vec<i64>, StoreError> {
        let ids = on_conn!(self, c => sqlx::query_scalar::<_, i64>("SELECT id FROM users ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?);
        Ok(ids)
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// The pool's saturation series.
    pub fn pool_metrics(&self) -> &PoolMetrics {
        &self.metrics
    }
}
