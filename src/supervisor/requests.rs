//! The supervisor loop's answers to control requests: one small function per request
//! (the socket side, which answers what needs no loop state, is [`super::server`]).

use std::collections::BTreeMap;

use super::core::{Core, Event};
use super::{Executor, LoopReply};
use crate::control::protocol::Level;
use crate::control::protocol::{ErrorKind, Request, Response, UnitInfo};

/// An error reply.
fn err(kind: ErrorKind, message: impl Into<String>) -> LoopReply {
    LoopReply::Response(Response::Error {
        kind,
        message: message.into(),
    })
}

/// The instance names `names` select (`worker` selects `worker@1..N`), or the error reply.
fn select(core: &Core, names: &[String]) -> Result<Vec<String>, LoopReply> {
    crate::control::protocol::select(&core.statuses(), names, |u| &u.name)
        .map(|s| s.into_iter().map(|u| u.name.clone()).collect())
        .map_err(|m| err(ErrorKind::UnknownUnit, m))
}

impl Executor {
    /// Answers one control request that needs the loop's state.
    pub(super) fn control(&mut self, core: &mut Core, req: Request) -> LoopReply {
        match req {
            Request::Start { units, .. } => self.lifecycle(core, &units, Event::Start),
            Request::Stop { units, .. } => self.lifecycle(core, &units, Event::Stop),
            Request::Restart { units, .. } => self.lifecycle(core, &units, Event::Restart),
            Request::Reload { dry_run } => {
                LoopReply::Response(self.reload(core, dry_run, "tmidb-cli reload"))
            }
            Request::Deps { unit } => deps(core, unit),
            Request::ConfigGet { key } => self.config_get(key),
            Request::ConfigSet { key, value } => match self.config_set(&key, &value) {
                Ok(()) => LoopReply::Response(Response::Config {
                    values: vec![(key.clone(), self.config_values()[&key].clone())],
                }),
                Err((kind, message)) => err(kind, message),
            },
            Request::UnitsList => units_list(core),
            Request::UnitsCat { unit } => units_cat(core, unit),
            Request::LogChannels => LoopReply::Response(Response::Channels {
                channels: self.hub.channels(),
            }),
            Request::LogSet {
                channels,
                enabled,
                level,
            } => self.log_set(&channels, enabled, level),
            Request::Failures { unit } => match core.failures(&unit) {
                Some(records) => LoopReply::Response(Response::Failures { records }),
                None => err(ErrorKind::UnknownUnit, format!("unknown unit `{unit}`")),
            },
            req @ (Request::LogShow { .. }
            | Request::LogFollow { .. }
            | Request::Status { .. }
            | Request::Hello { .. }) => err(
                ErrorKind::Unexpected,
                format!("handled by the server: {req:?}"),
            ),
        }
    }

    /// Start, stop or restart: feeds the event; the server waits for the units to settle.
    fn lifecycle(
        &mut self,
        core: &mut Core,
        units: &[String],
        make: fn(Vec<String>) -> Event,
    ) -> LoopReply {
        if units.is_empty() {
            return err(ErrorKind::UnknownUnit, "name at least one unit");
        }
        if core.shutting_down() {
            return err(ErrorKind::ShuttingDown, "the supervisor is shutting down");
        }
        let names = match select(core, units) {
            Ok(n) => n,
            Err(reply) => return reply,
        };
        self.feed(core, make(names.clone()));
        LoopReply::Wait(names)
    }

    fn config_get(&self, key: Option<String>) -> LoopReply {
        let vars = self.config_values();
        match key {
            None => LoopReply::Response(Response::Config {
                values: vars.into_iter().collect(),
            }),
            Some(k) => match vars.get(&k) {
                Some(v) => LoopReply::Response(Response::Config {
                    values: vec![(k, v.clone())],
                }),
                None => err(
                    ErrorKind::UnknownKey,
                    format!("unknown key `{k}`; `tmidb-cli config get` lists every key"),
                ),
            },
        }
    }

    fn log_set(
        &self,
        channels: &[String],
        enabled: Option<bool>,
        level: Option<Level>,
    ) -> LoopReply {
        if channels.is_empty() {
            return err(ErrorKind::UnknownUnit, "name at least one channel");
        }
        for c in channels {
            if !self.hub.has_channel(c) {
                let known: Vec<String> =
                    self.hub.channels().into_iter().map(|c| c.channel).collect();
                return err(
                    ErrorKind::UnknownUnit,
                    format!("unknown channel `{c}`; channels: {}", known.join(", ")),
                );
            }
        }
        for c in channels {
            if let Err(e) = self.hub.set_channel(c, enabled, level) {
                return err(
                    ErrorKind::Failed,
                    format!("cannot save {}: {e}", self.cfg.state_path().display()),
                );
            }
            let what = match (enabled, level) {
                (Some(true), _) => "enabled in the unified output".to_string(),
                (Some(false), _) => "disabled in the unified output".to_string(),
                (None, Some(l)) => format!("lowest level now {l}"),
                (None, None) => "unchanged".to_string(),
            };
            tracing::info!(channel = %c, "log channel {c} {what}");
        }
        let all = self
            .hub
            .channels()
            .into_iter()
            .filter(|c| channels.contains(&c.channel))
            .collect();
        LoopReply::Response(Response::Channels { channels: all })
    }

    /// tmidb.toml's effective values plus the runtime settings the supervisor owns.
    pub(super) fn config_values(&self) -> BTreeMap<String, String> {
        let mut vars = self.cfg.vars();
        vars.insert("units_dir".into(), self.units_dir.display().to_string());
        vars.insert("logs.ring_lines".into(), self.hub.ring_lines().to_string());
        for c in self.hub.channels() {
            vars.insert(
                format!("logs.channel.{}.enabled", c.channel),
                c.enabled.to_string(),
            );
            vars.insert(
                format!("logs.channel.{}.level", c.channel),
                c.level.to_string(),
            );
        }
        vars
    }

    /// Sets one runtime setting (persisted by the log hub).
    fn config_set(&self, key: &str, value: &str) -> Result<(), (ErrorKind, String)> {
        let save = |r: std::io::Result<()>| {
            r.map_err(|e| {
                (
                    ErrorKind::Failed,
                    format!("cannot save {}: {e}", self.cfg.state_path().display()),
                )
            })
        };
        let bad = |what: &str| {
            (
                ErrorKind::InvalidArgument,
                format!("`{value}` is not {what} (for `{key}`)"),
            )
        };
        if key == "logs.ring_lines" {
            let n: usize = value
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("a positive number of lines"))?;
            return save(self.hub.set_ring_lines(n));
        }
        if let Some(rest) = key.strip_prefix("logs.channel.") {
            let (channel, field) = rest.rsplit_once('.').unwrap_or((rest, ""));
            if !self.hub.has_channel(channel) {
                return Err((
                    ErrorKind::UnknownKey,
                    format!("unknown channel `{channel}` in `{key}`"),
                ));
            }
            return match field {
                "enabled" => {
                    let b: bool = value.parse().map_err(|_| bad("true or false"))?;
                    save(self.hub.set_channel(channel, Some(b), None))
                }
                "level" => {
                    let l: Level = value
                        .parse()
                        .map_err(|e: String| (ErrorKind::InvalidArgument, e))?;
                    save(self.hub.set_channel(channel, None, Some(l)))
                }
                _ => Err((
                    ErrorKind::UnknownKey,
                    format!("unknown key `{key}`; use logs.channel.NAME.enabled or .level"),
                )),
            };
        }
        if self.config_values().contains_key(key) {
            return Err((
                ErrorKind::Failed,
                format!(
                    "`{key}` comes from {}: edit it there (the file is re-read when it changes)",
                    self.cfg.file.display()
                ),
            ));
        }
        Err((
            ErrorKind::UnknownKey,
            format!("unknown key `{key}`; `tmidb-cli config get` lists every key"),
        ))
    }
}

/// `deps [UNIT]`: the dependency tree of the selected units, or the start levels.
fn deps(core: &Core, unit: Option<String>) -> LoopReply {
    let g = core.graph();
    let text = match unit {
        Some(u) => match select(core, std::slice::from_ref(&u)) {
            Ok(sel) => sel.iter().map(|n| g.tree(n)).collect::<Vec<_>>().join("\n"),
            Err(reply) => return reply,
        },
        None => g
            .levels()
            .iter()
            .enumerate()
            .map(|(i, l)| format!("level {i}: {}\n", l.join(" ")))
            .collect(),
    };
    LoopReply::Response(Response::Text { text })
}

/// `units list`: every instance with its file and edges.
fn units_list(core: &Core) -> LoopReply {
    let g = core.graph();
    let edges = |m: &BTreeMap<String, Vec<String>>, n: &str| m.get(n).cloned().unwrap_or_default();
    let units = core
        .names()
        .iter()
        .filter_map(|n| core.unit(n))
        .map(|u| UnitInfo {
            name: u.spec.name.clone(),
            state: u.state,
            kind: format!("{:?}", u.spec.kind).to_lowercase(),
            channel: u.spec.log.channel.clone(),
            file: u.spec.source.display().to_string(),
            description: u.spec.description.clone(),
            requires: edges(&g.requires, &u.spec.name),
            wants: edges(&g.wants, &u.spec.name),
            after: g.order_of(&u.spec.name).to_vec(),
        })
        .collect();
    LoopReply::Response(Response::Units { units })
}

/// `units cat UNIT`: the unit's file as loaded.
fn units_cat(core: &Core, unit: String) -> LoopReply {
    let first = match select(core, std::slice::from_ref(&unit)) {
        Ok(sel) => sel[0].clone(),
        Err(reply) => return reply,
    };
    let file = core
        .unit(&first)
        .map(|u| u.spec.source.clone())
        .unwrap_or_default();
    match std::fs::read_to_string(&file) {
        Ok(text) => LoopReply::Response(Response::Text {
            text: format!("# {}\n{text}", file.display()),
        }),
        Err(e) => err(
            ErrorKind::Failed,
            format!("cannot read {}: {e}", file.display()),
        ),
    }
}
