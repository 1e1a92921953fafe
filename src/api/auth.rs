//! Authentication and authorisation: argon2id passwords, sessions (cookie + CSRF header)
//! and API tokens (Bearer, scoped, expiring), login throttling, and the rules of who may
//! do what.
//!
//! Session cookies and API tokens are random strings; only their SHA-256 is stored, so a
//! database dump does not hand out credentials. Cookie-authenticated writes must carry
//! the session's CSRF token in `X-CSRF-Token` (the cookie is also SameSite=Strict).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::Request;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::{ApiExtractor, Enum, SecurityScheme};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tmidb_session";
/// Header carrying the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "X-CSRF-Token";
/// Session lifetime.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "tmss_";
/// Prefix of API tokens.
pub const TOKEN_PREFIX: &str = "tmid_";

/// User roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users and the supervisor.
    Admin,
    /// Categories and records.
    Editor,
    /// Reads only.
    Viewer,
}

impl Role {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a stored role.
    pub fn parse(s: &str) -> Role {
        match s {
            "admin" => Role::Admin,
            "editor" => Role::Editor,
            _ => Role::Viewer,
        }
    }
}

/// A token scope: `admin`, `read:CATEGORY`, `write:CATEGORY` (`*` for every category).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything the owner's role allows.
    Admin,
    /// Read a category's records and files.
    Read(String),
    /// Write (and read) a category's records and files.
    Write(String),
}

impl Scope {
    /// Parses `admin`, `read:X`, `write:X`.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let ok_name = |n: &str| n == "*" || crate::model::schema::valid_identifier(n);
        match s.split_once(':') {
            None if s == "admin" => Ok(Scope::Admin),
            Some(("read", c)) if ok_name(c) => Ok(Scope::Read(c.into())),
            Some(("write", c)) if ok_name(c) => Ok(Scope::Write(c.into())),
            _ => Err(format!(
                "invalid scope `{s}`: use admin, read:CATEGORY, write:CATEGORY (CATEGORY may be *)"
            )),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id.
    pub user_id: Uuid,
    /// User name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Token scopes (None: a session, limited by the role only).
    pub scopes: Option<Vec<Scope>>,
    /// The stored hash of the session token, when the caller is a session.
    pub session_hash: Option<Vec<u8>>,
}

impl Principal {
    fn scoped(&self, f: impl Fn(&Scope) -> bool) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| *x == Scope::Admin || f(x)))
    }

    /// Admin only (and, for tokens, the `admin` scope).
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.role == Role::Admin && self.scoped(|_| false) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this needs the admin role (and the admin scope for tokens)",
            ))
        }
    }

    /// Reading records and files of `category`.
    pub fn require_read(&self, category: &str) -> ApiResult<()> {
        if self
            .scoped(|s| matches!(s, Scope::Read(c) | Scope::Write(c) if c == "*" || c == category))
        {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token has no read:{category} scope"
            )))
        }
    }

    /// Writing records and files of `category`.
    pub fn require_write(&self, category: &str) -> ApiResult<()> {
        if self.role == Role::Viewer {
            return Err(ApiError::forbidden(
                "viewers cannot write; ask an admin for the editor role",
            ));
        }
        if self.scoped(|s| matches!(s, Scope::Write(c) if c == "*" || c == category)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token has no write:{category} scope"
            )))
        }
    }

    /// Creating, changing and deleting category schemas.
    pub fn require_editor(&self) -> ApiResult<()> {
        if self.role == Role::Viewer {
            return Err(ApiError::forbidden("this needs the editor or admin role"));
        }
        if self.scoped(|s| matches!(s, Scope::Write(c) if c == "*")) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this token needs the write:* or admin scope",
            ))
        }
    }
}

/// Bearer authentication: an API token (`tmid_…`) or a session token (`tmss_…`).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

/// Cookie authentication: the session cookie set by login; writes need `X-CSRF-Token`.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "tmidb_session",
    key_in = "cookie",
    checker = "check_cookie"
)]
pub struct CookieAuth(pub Principal);

/// Either scheme, chosen by what the request carries: an `Authorization` header is a
/// Bearer attempt and its error is the answer (a cookie sent alongside is not tried);
/// otherwise the session cookie. Written by hand rather than derived, because the
/// derived alternative answers with the last scheme's bare "authorization error" and
/// so hides why a token was refused (or that the database was down: 503, not 401).
pub enum Auth {
    /// Bearer token.
    Bearer(BearerAuth),
    /// Session cookie.
    Cookie(CookieAuth),
}

impl<'a> poem_openapi::ApiExtractor<'a> for Auth {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <BearerAuth as ApiExtractor>::register(registry);
        <CookieAuth as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut s = <BearerAuth as ApiExtractor>::security_schemes();
        s.extend(<CookieAuth as ApiExtractor>::security_schemes());
        s
    }

    async fn from_request(
        req: &'a Request,
        body: &mut poem::RequestBody,
        _opts: poem_openapi::ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let auth = if req
            .headers()
            .contains_key(poem::http::header::AUTHORIZATION)
        {
            <BearerAuth as ApiExtractor>::from_request(req, body, Default::default())
                .await
                .map(Auth::Bearer)
                .map_err(|e| ours(e, "the Authorization header must be `Bearer TOKEN`"))?
        } else if req.cookie().get(SESSION_COOKIE).is_some() {
            <CookieAuth as ApiExtractor>::from_request(req, body, Default::default())
                .await
                .map(Auth::Cookie)
                .map_err(|e| ours(e, "the session cookie is malformed; log in again"))?
        } else {
            return Err(ApiError::unauthorized(format!(
                "no credentials: send `Authorization: Bearer TOKEN` (an API or session token) or the {SESSION_COOKIE} cookie from login"
            ))
            .into());
        };
        // The boundary found the body wrong and left saying so until the caller was
        // known (see boundary::guard).
        if let Some(refused) = req.extensions().get::<super::boundary::BodyRefused>() {
            return Err(refused.error().into());
        }
        Ok(auth)
    }
}

/// Our checkers answer with an ApiError (a response); poem-openapi's own extractors
/// with a bare "authorization error": reworded as `what`.
fn ours(e: poem::Error, what: &str) -> poem::Error {
    if e.is_from_response() {
        e
    } else {
        ApiError::unauthorized(what.to_string()).into()
    }
}

/// Bearer authentication alone (the data-manager's push endpoint), with the same
/// JSON 401s as [`Auth`].
pub struct BearerOnly(pub Principal);

impl<'a> poem_openapi::ApiExtractor<'a> for BearerOnly {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <BearerAuth as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        <BearerAuth as ApiExtractor>::security_schemes()
    }

    async fn from_request(
        req: &'a Request,
        body: &mut poem::RequestBody,
        _opts: poem_openapi::ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        if !req
            .headers()
            .contains_key(poem::http::header::AUTHORIZATION)
        {
            return Err(ApiError::unauthorized(
                "send `Authorization: Bearer TOKEN` (a token with write:CATEGORY)",
            )
            .into());
        }
        <BearerAuth as ApiExtractor>::from_request(req, body, Default::default())
            .await
            .map(|b| BearerOnly(b.0))
            .map_err(|e| ours(e, "the Authorization header must be `Bearer TOKEN`"))
    }
}

impl Auth {
    /// The caller.
    pub fn principal(&self) -> &Principal {
        match self {
            Auth::Cookie(c) => &c.0,
            Auth::Bearer(b) => &b.0,
        }
    }
}

/// SHA-256 of a secret token, as stored.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new random token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", crate::setup::random_token(40))
}

fn state(req: &Request) -> poem::Result<&Arc<AppState>> {
    req.data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::internal("missing app state").into())
}

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    Ok(bearer_principal(state(req)?, &bearer.token).await?)
}

/// The caller behind a Bearer token (an API token or a session token); also used by
/// the ingest endpoint of the data-manager.
pub async fn bearer_principal(st: &AppState, token: &str) -> ApiResult<Principal> {
    let t = token.trim();
    if t.starts_with(SESSION_PREFIX) {
        return Ok(session(st, t).await?.0);
    }
    if !t.starts_with(TOKEN_PREFIX) {
        return Err(ApiError::unauthorized(
            "not a tmiDB token (they start with tmid_ or tmss_)",
        ));
    }
    let row: Option<(Uuid, Uuid, String, String, Vec<String>)> = sqlx::query_as(
        "SELECT t.id, u.id, u.username, u.role, t.scopes FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(token_hash(t))
    .fetch_optional(&st.pool)
    .await?;
    let Some((token_id, user_id, username, role, scopes)) = row else {
        return Err(ApiError::unauthorized("unknown, revoked or expired token"));
    };
    let pool = st.pool.clone();
    tokio::spawn(async move {
        let _ = sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
            .bind(token_id)
            .execute(&pool)
            .await;
    });
    let scopes = scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
    Ok(Principal {
        user_id,
        username,
        role: Role::parse(&role),
        scopes: Some(scopes),
        session_hash: None,
    })
}

async fn check_cookie(req: &Request, key: ApiKey) -> poem::Result<Principal> {
    let st = state(req)?;
    let (principal, csrf) = session(st, &key.key).await?;
    let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    if !safe {
        let sent = req.header(CSRF_HEADER).unwrap_or_default();
        if sent.is_empty() || sent != csrf {
            return Err(ApiError::forbidden(format!(
                "cookie-authenticated writes need the {CSRF_HEADER} header with the csrf_token from login"
            ))
            .into());
        }
    }
    Ok(principal)
}

/// A live session's user and CSRF token.
async fn session(st: &AppState, token: &str) -> ApiResult<(Principal, String)> {
    let row: Option<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT u.id, u.username, u.role, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(token_hash(token))
    .fetch_optional(&st.pool)
    .await?;
    let (user_id, username, role, csrf) =
        row.ok_or_else(|| ApiError::unauthorized("session expired or logged out; log in again"))?;
    Ok((
        Principal {
            user_id,
            username,
            role: Role::parse(&role),
            scopes: None,
            session_hash: Some(token_hash(token)),
        },
        csrf,
    ))
}

/// Hashes a password with argon2id (default parameters, random salt).
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::PasswordHasher;
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

/// Checks a password against a stored hash.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
        PasswordHash::new(&hash)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// An argon2id hash of a random password (made once), checked when a login names an
/// unknown user so the answer takes as long as for a known one.
pub async fn dummy_hash() -> String {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| async {
        hash_password(crate::setup::random_token(24))
            .await
            .unwrap_or_default()
    })
    .await
    .clone()
}

/// Failed-login throttling per user name and per client address: more than
/// `max` failures within `window` locks further attempts until the oldest ages out.
pub struct Throttle {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    /// A throttle allowing `max` failures per `window`.
    pub fn new(max: usize, window: Duration) -> Throttle {
        Throttle {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds to wait if any of `keys` is locked.
    pub fn locked(&self, keys: &[String]) -> Option<u64> {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("lock");
        keys.iter()
            .filter_map(|k| {
                let q = f.get_mut(k)?;
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.window)
                {
                    q.pop_front();
                }
                (q.len() >= self.max)
                    .then(|| (self.window - now.duration_since(q[0])).as_secs().max(1))
            })
            .max()
    }

    /// Records a failure for every key.
    pub fn fail(&self, keys: &[String]) {
        let mut f = self.failures.lock().expect("lock");
        for k in keys {
            f.entry(k.clone()).or_default().push_back(Instant::now());
        }
    }

    /// Clears a user's failures after a successful login.
    pub fn succeed(&self, key: &str) {
        self.failures.lock().expect("lock").remove(key);
    }
}

/// Creates the first admin (`admin`, generated password in `secrets/admin.password`,
/// 0600) when there are no users; names the file in the log, never the password.
pub async fn bootstrap_admin(st: &AppState) -> ApiResult<()> {
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&st.pool)
        .await?;
    if users > 0 {
        return Ok(());
    }
    let path = st.cfg.secrets_dir.join("admin.password");
    let password =
        crate::setup::secret(&st.cfg, "admin.password", 24).map_err(ApiError::internal)?;
    let hash = hash_password(password).await?;
    sqlx::query("INSERT INTO users (id, username, password_hash, role) VALUES ($1, 'admin', $2, 'admin') ON CONFLICT DO NOTHING")
        .bind(Uuid::new_v4())
        .bind(hash)
        .execute(&st.pool)
        .await?;
    tracing::info!(file = %path.display(), "created the first user `admin`; its password is in {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, scopes: Option<&[&str]>) -> Principal {
        Principal {
            user_id: Uuid::nil(),
            username: "u".into(),
            role,
            scopes: scopes.map(|s| s.iter().map(|x| Scope::parse(x).unwrap()).collect()),
            session_hash: None,
        }
    }

    #[test]
    fn roles_and_scopes_combine() {
        assert!(p(Role::Viewer, None).require_read("w").is_ok());
        assert!(p(Role::Viewer, None).require_write("w").is_err());
        assert!(p(Role::Editor, None).require_write("w").is_ok());
        assert!(p(Role::Editor, None).require_admin().is_err());
        assert!(
            p(Role::Admin, Some(&["read:w"])).require_admin().is_err(),
            "a token narrows its owner"
        );
        assert!(p(Role::Admin, Some(&["read:w"])).require_read("w").is_ok());
        assert!(p(Role::Admin, Some(&["read:w"])).require_read("x").is_err());
        assert!(
            p(Role::Editor, Some(&["write:*"]))
                .require_write("x")
                .is_ok()
        );
        assert!(
            p(Role::Viewer, Some(&["write:*"]))
                .require_write("x")
                .is_err(),
            "scopes never widen a role"
        );
        assert!(Scope::parse("write:drop table").is_err());
        assert!(Scope::parse("delete:x").is_err());
    }

    #[test]
    fn throttle_locks_after_max_failures_and_unlocks_on_success() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let k = vec!["user:a".to_string()];
        for _ in 0..3 {
            assert!(t.locked(&k).is_none());
            t.fail(&k);
        }
        assert!(t.locked(&k).is_some_and(|s| s > 0 && s <= 60));
        t.succeed("user:a");
        assert!(t.locked(&k).is_none());
    }
}
