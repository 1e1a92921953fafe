//! First-run set-up of the external services, run by the default oneshot units
//! (`tmidb-supervisor setup postgresql|seaweedfs`): generated secrets and initialised
//! data directories. Each step is idempotent: existing secrets and data are never touched.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Config;

/// Why a set-up step failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Filesystem error.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A tool failed.
    #[error("{0}")]
    Tool(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SetupError + 'a {
    move |source| SetupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `n` random alphanumeric characters from the OS's CSPRNG.
pub fn random_token(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).expect("the OS random source works");
        // Rejection sampling keeps the distribution uniform over 62 characters.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == n {
                break;
            }
            out.push(CHARS[(*b % 62) as usize] as char);
        }
    }
    out
}

/// Writes `content` to a new file with mode 0600 (fails if it exists).
fn write_secret(path: &Path, content: &str) -> Result<(), SetupError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("cannot create", path))?;
    f.write_all(content.as_bytes())
        .map_err(io("cannot write", path))
}

/// Reads a secret, generating it first if missing.
pub fn secret(cfg: &Config, name: &str, len: usize) -> Result<String, SetupError> {
    let path = cfg.secrets_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&cfg.secrets_dir)
                .map_err(io("cannot create", &cfg.secrets_dir))?;
            std::fs::set_permissions(&cfg.secrets_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("cannot chmod", &cfg.secrets_dir))?;
            let s = random_token(len);
            write_secret(&path, &s)?;
            Ok(s)
        }
        Err(e) => Err(SetupError::Io {
            what: "cannot read",
            path,
            source: e,
        }),
    }
}

/// Initialises `data/postgresql` with scram-sha-256 auth and a generated password for the
/// `postgres` role (`secrets/postgresql.password`). Runs initdb as `user` when root.
pub fn postgresql(cfg: &Config, user: &str) -> Result<(), SetupError> {
    let data = cfg.data_dir.join("postgresql");
    if data.join("PG_VERSION").exists() {
        println!("postgresql: {} is already initialised", data.display());
        return Ok(());
    }
    let password = secret(cfg, "postgresql.password", 32)?;
    let id = if nix::unistd::Uid::effective().is_root() {
        let u = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .ok_or_else(|| {
                SetupError::Tool(format!(
                    "user `{user}` does not exist; install PostgreSQL (it creates it)"
                ))
            })?;
        Some((u.uid, u.gid))
    } else {
        None
    };
    if let Some((uid, gid)) = id
        && let Some(why) = crate::supervisor::process::unreachable(&data, uid, gid, user)
    {
        // initdb would fail with a bare "Permission denied".
        return Err(SetupError::Tool(why));
    }
    std::fs::create_dir_all(&data).map_err(io("cannot create", &data))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
        .map_err(io("cannot chmod", &data))?;
    let pwfile = cfg.runtime_dir.join("postgresql-init.pw");
    let _ = std::fs::remove_file(&pwfile);
    write_secret(&pwfile, &password)?;
    if let Some((uid, gid)) = id {
        for p in [&data, &pwfile] {
            nix::unistd::chown(p.as_path(), Some(uid), Some(gid)).map_err(|e| SetupError::Io {
                what: "cannot chown",
                path: p.to_path_buf(),
                source: e.into(),
            })?;
        }
    }
    let initdb = Path::new(&cfg.bin["pg_dir"]).join("initdb");
    let mut cmd = Command::new(&initdb);
    cmd.arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    if let Some((uid, gid)) = id {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    let status = cmd.status();
    let _ = std::fs::remove_file(&pwfile);
    match status {
        Ok(s) if s.success() => {
            println!(
                "postgresql: initialised {}; password of role postgres in {}",
                data.display(),
                cfg.secrets_dir.join("postgresql.password").display()
            );
            Ok(())
        }
        Ok(s) => Err(SetupError::Tool(format!(
            "{} failed ({s}); see its output above",
            initdb.display()
        ))),
        Err(e) => Err(SetupError::Tool(format!(
            "cannot run {}: {e}",
            initdb.display()
        ))),
    }
}

/// Writes the S3 identities file (`secrets/s3.json`) with a generated key pair, which
/// SeaweedFS reads with `-s3.config`; anonymous requests are then refused.
pub fn seaweedfs(cfg: &Config) -> Result<(), SetupError> {
    let path = cfg.secrets_dir.join("s3.json");
    if path.exists() {
        println!("seaweedfs: {} exists", path.display());
        return Ok(());
    }
    let access = secret(cfg, "s3.access_key", 20)?;
    let secret_key = secret(cfg, "s3.secret_key", 40)?;
    let doc = serde_json::json!({
        "identities": [{
            "name": "tmidb",
            "credentials": [{ "accessKey": access, "secretKey": secret_key }],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]
        }]
    });
    write_secret(&path, &serde_json::to_string_pretty(&doc).expect("json"))?;
    println!("seaweedfs: wrote S3 identities to {}", path.display());
    Ok(())
}

/// The NATS users of tmiDB's own services: each connects with its own password.
pub const NATS_SERVICES: &[&str] = &["api", "data-manager", "data-consumer"];

/// The NATS user for external publishers: may publish on `tmidb.ingest.>` (and
/// receive JetStream's acknowledgements on `_INBOX.>`), nothing else.
pub const NATS_PUBLISHER: &str = "publisher";

/// The nats-server configuration for these users and passwords (alphanumeric, so
/// they need no escaping).
fn nats_conf(users: &[(&str, String)]) -> String {
    let mut out = String::from(
        "# Written by `tmidb-supervisor setup nats` from secrets/nats.*.password at every\n\
         # start of the stack: edits here are replaced.\n\
         authorization {\n  users = [\n",
    );
    for (user, password) in users {
        let permissions = if *user == NATS_PUBLISHER {
            ", permissions: { publish: { allow: [\"tmidb.ingest.>\"] }, \
             subscribe: { allow: [\"_INBOX.>\"] } }"
        } else {
            ""
        };
        out.push_str(&format!(
            "    {{ user: \"{user}\", password: \"{password}\"{permissions} }}\n"
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// Generates a NATS password per service and one for external publishers (kept once
/// made) and writes the server's configuration (`secrets/nats.conf`) from them, so
/// nats-server refuses clients without credentials. Run at every start: an
/// installation upgraded from one without NATS credentials gets them.
pub fn nats(cfg: &Config) -> Result<(), SetupError> {
    let mut users = vec![];
    for user in NATS_SERVICES.iter().chain([&NATS_PUBLISHER]) {
        users.push((*user, secret(cfg, &format!("nats.{user}.password"), 32)?));
    }
    let conf = nats_conf(&users);
    let path = cfg.secrets_dir.join("nats.conf");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(conf.as_str()) {
        println!("nats: {} is current", path.display());
        return Ok(());
    }
    let tmp = cfg.secrets_dir.join("nats.conf.tmp");
    let _ = std::fs::remove_file(&tmp);
    write_secret(&tmp, &conf)?;
    std::fs::rename(&tmp, &path).map_err(io("cannot replace", &path))?;
    println!(
        "nats: wrote {}; external publishers connect as `{NATS_PUBLISHER}` with the password in {}",
        path.display(),
        cfg.nats_password_file(NATS_PUBLISHER).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_have_the_length_and_alphabet_asked_for() {
        let t = super::random_token(40);
        assert_eq!(t.len(), 40);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(t, super::random_token(40));
    }

    #[test]
    fn only_the_publisher_is_restricted_in_the_nats_configuration() {
        let conf = super::nats_conf(&[("api", "A1".into()), ("publisher", "P2".into())]);
        let lines: Vec<&str> = conf.lines().filter(|l| l.contains("user:")).collect();
        assert_eq!(
            lines,
            [
                r#"    { user: "api", password: "A1" }"#,
                r#"    { user: "publisher", password: "P2", permissions: { publish: { allow: ["tmidb.ingest.>"] }, subscribe: { allow: ["_INBOX.>"] } } }"#,
            ]
        );
    }
}
