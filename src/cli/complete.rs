//! Dynamic completion candidates (unit and channel names) asked from the running
//! supervisor of `TMIDB_HOME` (or the default home). Used by `source <(COMPLETE=bash
//! tmidb-cli)`; completion stays silent when no supervisor answers within a second.

use std::time::Duration;

use clap_complete::engine::CompletionCandidate;

use crate::control::protocol::{Request, Response};

fn ask(req: Request) -> Option<Response> {
    let home = std::env::var_os("TMIDB_HOME").map(std::path::PathBuf::from);
    let cfg = crate::config::Config::load(&crate::config::home_or_default(home.as_deref())).ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), async {
            let mut c = super::connect(&cfg).await.ok()?;
            c.request(&req).await.ok()
        })
        .await
        .ok()
        .flatten()
    })
}

/// Unit and instance names (`worker` as well as `worker@1`).
pub fn units() -> Vec<CompletionCandidate> {
    let Some(Response::Status { units }) = ask(Request::Status { units: vec![] }) else {
        return vec![];
    };
    let mut names: Vec<String> = units.iter().map(|u| u.name.clone()).collect();
    names.extend(
        units
            .iter()
            .filter_map(|u| u.name.split_once('@').map(|(b, _)| b.to_string())),
    );
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let help = units
                .iter()
                .find(|u| u.name == n)
                .map(|u| u.state.as_str().to_string());
            CompletionCandidate::new(n).help(help.map(Into::into))
        })
        .collect()
}

/// Log channel names.
pub fn channels() -> Vec<CompletionCandidate> {
    let Some(Response::Channels { channels }) = ask(Request::LogChannels) else {
        return vec![];
    };
    channels
        .into_iter()
        .map(|c| CompletionCandidate::new(c.channel))
        .collect()
}
