//! Authentication and authorisation: argon2id passwords, sessions (cookie + CSRF header)
//! and API tokens (Bearer, scoped, expiring), login throttling, and the rules of who may
//! do what.
//!
//! Session cookies and API tokens are random strings; only their SHA-256 is stored, so a
//! database dump does not hand out credentials. Cookie-authenticated writes must carry
//! the session's CSRF token in `X-CSRF-Token` (the cookie is also SameSite=Strict).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use poem::Request;
use poem_openapi::auth::ApiKey;
use poem_openapi::{ApiExtractor, SecurityScheme};

use super::AppState;
use uuid::Uuid;

use crate::model::access::Principal;
use crate::web::bearer::{BearerAuth, ours, pool, session};
use crate::web::error::{ApiError, ApiResult};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tmidb_session";
/// Header carrying the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "X-CSRF-Token";
/// Session lifetime.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
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
        if let Some(refused) = req.extensions().get::<crate::web::boundary::BodyRefused>() {
            return Err(refused.error().into());
        }
        Ok(auth)
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

/// A new random token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", crate::setup::random_token(40))
}

async fn check_cookie(req: &Request, key: ApiKey) -> poem::Result<Principal> {
    let (principal, csrf) = session(pool(req)?, &key.key).await?;
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
