//! Who may do what: roles, token scopes and the caller ([`Principal`]) with the rules
//! every front-end applies before acting. Tokens and sessions are found by the
//! SHA-256 of the secret ([`token_hash`]), so a database dump hands out no credentials.

use poem_openapi::Enum;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A caller lacks the role or scope an action needs (the message says which).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Denied {
    fn new(why: impl Into<String>) -> Denied {
        Denied(why.into())
    }
}

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
    pub fn require_admin(&self) -> Result<(), Denied> {
        if self.role == Role::Admin && self.scoped(|_| false) {
            Ok(())
        } else {
            Err(Denied::new(
                "this needs the admin role (and the admin scope for tokens)",
            ))
        }
    }

    /// Reading records and files of `category`.
    pub fn require_read(&self, category: &str) -> Result<(), Denied> {
        if self
            .scoped(|s| matches!(s, Scope::Read(c) | Scope::Write(c) if c == "*" || c == category))
        {
            Ok(())
        } else {
            Err(Denied::new(format!(
                "this token has no read:{category} scope"
            )))
        }
    }

    /// Writing records and files of `category`.
    pub fn require_write(&self, category: &str) -> Result<(), Denied> {
        if self.role == Role::Viewer {
            return Err(Denied::new(
                "viewers cannot write; ask an admin for the editor role",
            ));
        }
        if self.scoped(|s| matches!(s, Scope::Write(c) if c == "*" || c == category)) {
            Ok(())
        } else {
            Err(Denied::new(format!(
                "this token has no write:{category} scope"
            )))
        }
    }

    /// Creating, changing and deleting category schemas.
    pub fn require_editor(&self) -> Result<(), Denied> {
        if self.role == Role::Viewer {
            return Err(Denied::new("this needs the editor or admin role"));
        }
        if self.scoped(|s| matches!(s, Scope::Write(c) if c == "*")) {
            Ok(())
        } else {
            Err(Denied::new("this token needs the write:* or admin scope"))
        }
    }
}

/// SHA-256 of a secret token, as stored.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
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
}
