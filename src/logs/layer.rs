//! A `tracing` layer that turns the supervisor's own events into records of channel
//! `supervisor`, so they share the unified stream, rings and followers with the units'
//! lines. Before a hub is installed (and in helper subcommands) events go to stderr.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use super::{Level, LogHub, supervisor_record};

static HUB: OnceLock<Arc<LogHub>> = OnceLock::new();

/// Routes supervisor events into `hub` from now on.
pub fn install(hub: Arc<LogHub>) {
    let _ = HUB.set(hub);
}

/// The layer.
pub struct HubLayer;

struct Fields {
    msg: String,
    fields: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.fields
                .insert(field.name().into(), Value::String(value.into()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.msg = text;
        } else {
            self.fields.insert(field.name().into(), Value::String(text));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HubLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields {
            msg: String::new(),
            fields: Map::new(),
        };
        event.record(&mut f);
        let level = match *event.metadata().level() {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::ERROR => Level::Error,
        };
        match HUB.get() {
            Some(hub) => hub.push_now(supervisor_record(level, f.msg, f.fields)),
            None => {
                let extra: String = f.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
                eprintln!("{level}: {}{extra}", f.msg);
            }
        }
    }
}
