//! Looking up callers: API tokens and sessions by the SHA-256 of their secret.

use sqlx::PgPool;
use uuid::Uuid;

use crate::model::access::{Principal, Role, Scope, token_hash};

#[derive(sqlx::FromRow)]
struct TokenRow {
    token_id: Uuid,
    user_id: Uuid,
    username: String,
    role: String,
    scopes: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    user_id: Uuid,
    username: String,
    role: String,
    csrf_token: String,
}

/// The owner of a live (not revoked, not expired) API token, limited to the token's
/// scopes; marks the token used (in the background: a lookup never waits for it).
pub async fn token_principal(pool: &PgPool, token: &str) -> Result<Option<Principal>, sqlx::Error> {
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT t.id AS token_id, u.id AS user_id, u.username, u.role, t.scopes
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let pool = pool.clone();
    tokio::spawn(async move {
        let _ = sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
            .bind(r.token_id)
            .execute(&pool)
            .await;
    });
    Ok(Some(Principal {
        user_id: r.user_id,
        username: r.username,
        role: Role::parse(&r.role),
        scopes: Some(
            r.scopes
                .iter()
                .filter_map(|s| Scope::parse(s).ok())
                .collect(),
        ),
        session_hash: None,
    }))
}

/// The user of a live session and the session's CSRF token.
pub async fn session_principal(
    pool: &PgPool,
    token: &str,
) -> Result<Option<(Principal, String)>, sqlx::Error> {
    let hash = token_hash(token);
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT u.id AS user_id, u.username, u.role, s.csrf_token
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        (
            Principal {
                user_id: r.user_id,
                username: r.username,
                role: Role::parse(&r.role),
                scopes: None,
                session_hash: Some(hash),
            },
            r.csrf_token,
        )
    }))
}
