//! API tokens, for both front-ends of the api: created for the signed-in user (the
//! secret is returned once; only its SHA-256 is stored), listed, revoked. A token
//! narrows its owner: it cannot hold a scope the owner's role could not use, and a
//! token cannot create tokens.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

use super::AppState;
use super::auth::new_token;
use crate::model::access::{self, Principal, Role, Scope};
use crate::web::error::{ApiError, ApiResult};

/// An API token (the secret is shown only when created).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Token {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The secret: only in the answer to its creation.
    #[oai(skip_serializing_if_is_none)]
    pub token: Option<String>,
}

/// An `api_tokens` row (no hash).
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn token_from(r: TokenRow) -> Token {
    Token {
        id: r.id,
        name: r.name,
        scopes: r.scopes,
        created_at: r.created_at,
        expires_at: r.expires_at,
        last_used_at: r.last_used_at,
        revoked_at: r.revoked_at,
        token: None,
    }
}

/// Creates a token named `name` for `p` with `scopes`, expiring after
/// `expires_in_days` (never when None); the answer holds the secret, this once.
pub async fn create(
    state: &AppState,
    p: &Principal,
    name: &str,
    scopes: &[String],
    expires_in_days: Option<u32>,
) -> ApiResult<Token> {
    crate::web::names::Label::new(name).map_err(ApiError::bad_request)?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "a token needs at least one scope: admin, read:CATEGORY or write:CATEGORY",
        ));
    }
    for s in scopes {
        let scope = Scope::parse(s).map_err(ApiError::bad_request)?;
        // A token narrows its owner; a scope the owner's role cannot use would
        // look like a grant and be none.
        let holds = match &scope {
            Scope::Admin => p.role == Role::Admin,
            Scope::Write(_) => p.role != Role::Viewer,
            Scope::Read(_) => true,
        };
        if !holds {
            return Err(ApiError::forbidden(format!(
                "a {} cannot hold the scope `{s}`",
                p.role.as_str()
            )));
        }
    }
    if p.scopes.is_some() {
        return Err(ApiError::forbidden(
            "tokens cannot create tokens; log in with a password",
        ));
    }
    let token = new_token(access::TOKEN_PREFIX);
    let expires = expires_in_days.map(|d| Utc::now() + chrono::Duration::days(d.into()));
    let row: TokenRow = sqlx::query_as(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, scopes, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, name, scopes, created_at, expires_at, last_used_at, revoked_at",
        )
        .bind(Uuid::new_v4())
        .bind(p.user_id)
        .bind(name)
        .bind(access::token_hash(&token))
        .bind(scopes)
        .bind(expires)
        .fetch_one(&state.pool)
        .await?;
    let created = Token {
        token: Some(token),
        ..token_from(row)
    };
    Ok(created)
}

/// The tokens of `p` (of every user when `everyone`), oldest first.
pub async fn list(state: &AppState, p: &Principal, everyone: bool) -> ApiResult<Vec<Token>> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT id, name, scopes, created_at, expires_at, last_used_at, revoked_at FROM api_tokens
         WHERE $1 OR user_id = $2 ORDER BY created_at",
    )
    .bind(everyone)
    .bind(p.user_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows.into_iter().map(token_from).collect())
}

/// Revokes token `id`: one of `p`'s own, or any when `p` is an admin.
pub async fn revoke(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<()> {
    let all = p.require_admin().is_ok();
    let n = sqlx::query(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND ($2 OR user_id = $3)",
    )
    .bind(id)
    .bind(all)
    .bind(p.user_id)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found(format!("no token {id} of yours")));
    }
    Ok(())
}
