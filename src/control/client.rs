//! The control-socket client (`tmidb-cli`, and later the api).

use std::path::{Path, PathBuf};

use super::protocol::{PROTOCOL_VERSION, Request, Response};
use super::{Conn, FrameError, framed, recv, send};

/// Why talking to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "no supervisor is running for this home: {path} {why}\n  hint: start it with `tmidb-supervisor --home DIR` (or `make run`), or point --home / TMIDB_HOME at the right home"
    )]
    NotRunning {
        /// Socket path tried.
        path: PathBuf,
        /// `does not exist` / `refused the connection`.
        why: &'static str,
    },
    /// The socket exists but we may not use it.
    #[error(
        "permission denied on {path}\n  hint: run as the supervisor's user, or set [control] group in tmidb.toml and join that group"
    )]
    PermissionDenied {
        /// Socket path.
        path: PathBuf,
    },
    /// Any other connect error.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Different protocol versions.
    #[error(
        "the supervisor speaks control protocol {server}, this client {client}; use the tmidb-cli that came with the running supervisor"
    )]
    VersionMismatch {
        /// Supervisor's version.
        server: u32,
        /// Ours.
        client: u32,
    },
    /// Framing or decoding failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The supervisor answered something this request does not expect.
    #[error("unexpected answer from the supervisor: {0}")]
    Unexpected(String),
}

/// A connected, version-checked client.
pub struct Client {
    conn: Conn,
}

impl Client {
    /// Connects to `path` and exchanges Hello.
    pub async fn connect(path: &Path, client_name: &str) -> Result<Client, ClientError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ClientError::NotRunning {
                    path: path.into(),
                    why: "does not exist",
                },
                std::io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
                    path: path.into(),
                    why: "refused the connection (stale socket)",
                },
                std::io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied { path: path.into() }
                }
                _ => ClientError::Connect {
                    path: path.into(),
                    source: e,
                },
            })?;
        let mut conn = framed(stream);
        send(
            &mut conn,
            &Request::Hello {
                version: PROTOCOL_VERSION,
                client: client_name.to_string(),
            },
        )
        .await?;
        match recv::<Response>(&mut conn).await? {
            Response::Hello { version, .. } if version == PROTOCOL_VERSION => Ok(Client { conn }),
            Response::Hello { version, .. } => Err(ClientError::VersionMismatch {
                server: version,
                client: PROTOCOL_VERSION,
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends one request and returns the answer.
    pub async fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        send(&mut self.conn, req).await?;
        Ok(recv(&mut self.conn).await?)
    }
}

/// Responses of a streaming request (`LogFollow`), read one at a time.
pub struct Responses<'a> {
    conn: &'a mut Conn,
}

impl Responses<'_> {
    /// The next response; an error once the supervisor closes the connection.
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        Ok(recv(self.conn).await?)
    }
}

impl Client {
    /// Sends a streaming request; read its responses with [`Responses::next`].
    pub async fn stream(&mut self, req: &Request) -> Result<Responses<'_>, ClientError> {
        send(&mut self.conn, req).await?;
        Ok(Responses {
            conn: &mut self.conn,
        })
    }
}
