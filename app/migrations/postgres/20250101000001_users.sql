CREATE TABLE IF NOT EXISTS users (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT      NOT NULL,
    email      TEXT      NOT NULL UNIQUE,
    created_at BIGINT    NOT NULL,
    updated_at BIGINT    NOT NULL
);
