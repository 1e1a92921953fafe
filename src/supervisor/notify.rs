//! sd_notify both ways: a NOTIFY_SOCKET per unit that needs one (`READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `STOPPING=1`), and `READY=1` to our own parent when it gave us one.
//!
//! One socket per unit instance (`run/notify/NAME.sock`) attributes every message to its
//! unit without needing SCM_CREDENTIALS.

use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;
use tokio::sync::mpsc::UnboundedSender;

use crate::supervisor::core::{Event, NotifyMsg};

/// Parses one datagram into messages.
pub fn parse(datagram: &str) -> Vec<NotifyMsg> {
    datagram
        .lines()
        .filter_map(|l| match l.split_once('=') {
            Some(("READY", "1")) => Some(NotifyMsg::Ready),
            Some(("WATCHDOG", "1")) => Some(NotifyMsg::Watchdog),
            Some(("STOPPING", "1")) => Some(NotifyMsg::Stopping),
            Some(("STATUS", s)) => Some(NotifyMsg::Status(s.to_string())),
            _ => None,
        })
        .collect()
}

/// Binds `dir/NAME.sock` and forwards messages as events until the task is aborted.
pub fn listen(
    dir: &Path,
    unit: &str,
    tx: UnboundedSender<Event>,
) -> std::io::Result<(PathBuf, tokio::task::JoinHandle<()>)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join(format!("{unit}.sock"));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path)?;
    // Units may run as another user (postgres); they must be able to write here.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    let unit = unit.to_string();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf).await {
            for msg in parse(&String::from_utf8_lossy(&buf[..n])) {
                if tx
                    .send(Event::Notify {
                        unit: unit.clone(),
                        msg,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    Ok((path, task))
}

/// Sends `msg` to our parent's NOTIFY_SOCKET, if it gave us one (`@name` is abstract).
pub fn notify_parent(msg: &str) -> std::io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let t = target.to_string_lossy();
    if let Some(name) = t.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        sock.send_to(msg.as_bytes(), Path::new(&target))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_assignments_and_ignores_others() {
        assert_eq!(
            parse("READY=1\nSTATUS=warming up\nMAINPID=7\nWATCHDOG=1\nSTOPPING=1"),
            [
                NotifyMsg::Ready,
                NotifyMsg::Status("warming up".into()),
                NotifyMsg::Watchdog,
                NotifyMsg::Stopping
            ]
        );
    }
}
