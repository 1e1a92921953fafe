//! The console's pages: one sailfish template per page in `templates/`, a frame
//! (title, signed-in user, CSRF token, stylesheet) that the layout partials read, and
//! the stylesheet under a content-hashed name.
//!
//! Every value goes through `<%= %>` (HTML-escaped); no template inserts raw HTML.

use sailfish::TemplateSimple;

use crate::control::protocol::{ChannelState, LogRecord, UnitInfo, UnitStatus};

/// A file the pages load, embedded in the binary and served under a name carrying a
/// digest of its content, so it can be cached for a year and a new build is fetched
/// at once.
pub struct Asset {
    /// Its name in `templates/assets/`.
    pub name: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
}

/// Every asset of the console.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../templates/assets/console.css"),
    },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../templates/assets/dashboard.js"),
    },
    Asset {
        name: "logs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../templates/assets/logs.js"),
    },
];

impl Asset {
    /// Where it is served: `/assets/STEM-DIGEST.EXT`.
    pub fn path(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.body.as_bytes());
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let (stem, ext) = self.name.rsplit_once('.').unwrap_or((self.name, ""));
        format!("/assets/{stem}-{hex}.{ext}")
    }
}

/// The served path of the asset `name`.
pub fn asset_path(name: &str) -> String {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(Asset::path)
        .unwrap_or_default()
}

/// The signed-in user, as the header shows them.
pub struct Who {
    /// User name.
    pub username: String,
    /// Role.
    pub role: &'static str,
}

/// What the layout partials read.
pub struct Frame {
    /// Page title.
    pub title: &'static str,
    /// The signed-in user (None: the login and error pages of a stranger).
    pub who: Option<Who>,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// The stylesheet's path.
    pub css: String,
    /// tmiDB's version.
    pub version: &'static str,
}

impl Frame {
    /// The frame of a page shown to someone not signed in.
    pub fn anonymous(title: &'static str) -> Frame {
        Frame {
            title,
            who: None,
            csrf: String::new(),
            css: asset_path("console.css"),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(TemplateSimple)]
#[template(path = "login.stpl")]
struct Login<'a> {
    frame: &'a Frame,
    error: Option<String>,
    username: &'a str,
}

#[derive(TemplateSimple)]
#[template(path = "dashboard.stpl")]
struct Dashboard<'a> {
    frame: &'a Frame,
    units: Option<Vec<UnitStatus>>,
    note: &'a str,
    script: String,
}

#[derive(TemplateSimple)]
#[template(path = "units.stpl")]
struct Units<'a> {
    frame: &'a Frame,
    units: Vec<(UnitStatus, Option<UnitInfo>)>,
    done: Option<String>,
}

#[derive(TemplateSimple)]
#[template(path = "confirm.stpl")]
struct Confirm<'a> {
    frame: &'a Frame,
    unit: &'a str,
    action: &'a str,
    verb: &'a str,
    verb_lower: &'a str,
    also: Vec<String>,
}

#[derive(TemplateSimple)]
#[template(path = "logs.stpl")]
struct Logs<'a> {
    frame: &'a Frame,
    channels: Vec<ChannelState>,
    records: Vec<LogRecord>,
    disabled: String,
    script: String,
}

#[derive(TemplateSimple)]
#[template(path = "account.stpl")]
struct Account<'a> {
    frame: &'a Frame,
    sessions: Vec<crate::api::session::SessionInfo>,
    tokens: Vec<crate::api::tokens::Token>,
    created: Option<crate::api::tokens::Token>,
    error: Option<String>,
}

#[derive(TemplateSimple)]
#[template(path = "error.stpl")]
struct ErrorPage<'a> {
    frame: &'a Frame,
    message: &'a str,
}

/// A page and what it shows.
pub enum Page<'a> {
    /// The login form, with why the last attempt failed.
    Login {
        /// Why the last attempt failed.
        error: Option<String>,
        /// The user name tried (kept in the form).
        username: &'a str,
    },
    /// Units (admins) or a note saying who sees them.
    Dashboard {
        /// The units, for admins.
        units: Option<Vec<UnitStatus>>,
        /// Shown instead of the units.
        note: &'a str,
    },
    /// Units with their requirements and actions (admins only).
    Units {
        /// Each unit's status and its edges.
        units: Vec<(UnitStatus, Option<UnitInfo>)>,
        /// What the last action did.
        done: Option<String>,
    },
    /// Channel switches and the tail of every unit.
    Logs {
        /// The channels.
        channels: Vec<ChannelState>,
        /// The last lines, oldest first.
        records: Vec<LogRecord>,
    },
    /// The signed-in user's tokens and sessions.
    Account {
        /// Their live sessions.
        sessions: Vec<crate::api::session::SessionInfo>,
        /// Their tokens.
        tokens: Vec<crate::api::tokens::Token>,
        /// A token just created (its secret shown this once).
        created: Option<crate::api::tokens::Token>,
        /// Why the last form was refused.
        error: Option<String>,
    },
    /// "Stop / restart UNIT? This also …": the confirmation of a stop or restart.
    Confirm {
        /// The unit.
        unit: &'a str,
        /// `stop` or `restart`.
        action: &'a str,
        /// What else it stops or restarts.
        also: Vec<String>,
    },
}

impl Page<'_> {
    /// The page's HTML in `frame`.
    pub fn render(self, frame: &Frame) -> String {
        let out = match self {
            Page::Login { error, username } => Login {
                frame,
                error,
                username,
            }
            .render_once(),
            Page::Dashboard { units, note } => Dashboard {
                frame,
                units,
                note,
                script: asset_path("dashboard.js"),
            }
            .render_once(),
            Page::Units { units, done } => Units { frame, units, done }.render_once(),
            Page::Logs { channels, records } => {
                let disabled = channels
                    .iter()
                    .filter(|c| !c.enabled)
                    .map(|c| c.channel.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                Logs {
                    frame,
                    channels,
                    records,
                    disabled,
                    script: asset_path("logs.js"),
                }
                .render_once()
            }
            Page::Account {
                sessions,
                tokens,
                created,
                error,
            } => Account {
                frame,
                sessions,
                tokens,
                created,
                error,
            }
            .render_once(),
            Page::Confirm { unit, action, also } => {
                let verb = if action == "stop" { "Stop" } else { "Restart" };
                Confirm {
                    frame,
                    unit,
                    action,
                    verb,
                    verb_lower: action,
                    also,
                }
                .render_once()
            }
        };
        out.unwrap_or_else(|e| format!("the page could not be rendered: {e}"))
    }
}

/// An error page saying `message`.
pub fn error(frame: &Frame, message: &str) -> String {
    ErrorPage { frame, message }
        .render_once()
        .unwrap_or_else(|e| format!("the page could not be rendered: {e}"))
}
