//! The control socket: protocol types ([`protocol`]), framing (here) and the client used
//! by `tmidb-cli` and the api ([`client`]). It knows nothing of the supervisor: the
//! server side is [`crate::supervisor::server`].

pub mod client;
pub mod protocol;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A framed control connection: 4-byte big-endian length, then JSON.
pub type Conn = Framed<UnixStream, LengthDelimitedCodec>;

/// Errors on a control connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed (includes frames over [`protocol::MAX_FRAME`]).
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("the other side closed the connection")]
    Closed,
    /// A frame that is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Wraps a stream in the protocol's framing.
pub fn framed(stream: UnixStream) -> Conn {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(protocol::MAX_FRAME)
        .new_framed(stream)
}

/// Sends one message.
pub async fn send<T: Serialize>(conn: &mut Conn, msg: &T) -> Result<(), FrameError> {
    let bytes = serde_json::to_vec(msg)?;
    conn.send(tokio_util::bytes::Bytes::from(bytes)).await?;
    Ok(())
}

/// Receives one message.
pub async fn recv<T: DeserializeOwned>(conn: &mut Conn) -> Result<T, FrameError> {
    match conn.next().await {
        None => Err(FrameError::Closed),
        Some(Err(e)) => Err(FrameError::Io(e)),
        Some(Ok(bytes)) => Ok(serde_json::from_slice(&bytes)?),
    }
}
