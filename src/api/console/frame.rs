//! What every console page shares: the frame the layout partials read (title,
//! section, signed-in user, CSRF token, stylesheet), the assets under content-hashed
//! names, the error page, and the small formatters templates call.
//!
//! Templates insert every value through `<%= %>` (HTML-escaped); none inserts raw
//! HTML.

use chrono::{DateTime, Utc};
use sailfish::TemplateSimple;

use crate::model::access::Role;

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
    Asset {
        name: "explorer.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../templates/assets/explorer.js"),
    },
    Asset {
        name: "upload.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../templates/assets/upload.js"),
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
pub fn asset(name: &str) -> String {
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
    pub role: Role,
}

impl Who {
    /// Admins see the supervisor's pages and the users.
    pub fn admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Editors and admins see the buttons and forms that change data.
    pub fn editor(&self) -> bool {
        self.role != Role::Viewer
    }
}

/// What the layout partials read.
pub struct Frame {
    /// Page title.
    pub title: String,
    /// The navigation entry it belongs to (`dashboard`, `data`, …).
    pub section: &'static str,
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
    pub fn anonymous(title: impl Into<String>) -> Frame {
        Frame {
            title: title.into(),
            section: "",
            who: None,
            csrf: String::new(),
            css: asset("console.css"),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Whether the signed-in user may change data (editor or admin).
    pub fn editor(&self) -> bool {
        self.who.as_ref().is_some_and(Who::editor)
    }

    /// Whether the signed-in user is an admin.
    pub fn admin(&self) -> bool {
        self.who.as_ref().is_some_and(Who::admin)
    }

    /// ` aria-current="page"` is written by the header for the entry of `section`.
    pub fn current(&self, section: &str) -> bool {
        self.section == section
    }
}

#[derive(TemplateSimple)]
#[template(path = "error.stpl")]
struct ErrorPage<'a> {
    frame: &'a Frame,
    message: &'a str,
}

/// An error page saying `message`.
pub fn error(frame: &Frame, message: &str) -> String {
    ErrorPage { frame, message }
        .render_once()
        .unwrap_or_else(|e| format!("the page could not be rendered: {e}"))
}

/// A time as the console shows it: `2026-12-06 10:00:00 UTC`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time as an `<input type="datetime-local">` holds it (UTC): `2026-12-06T10:00:00`.
pub fn local_input(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// How long ago `t` was, in words (`12 s ago`, `3 min ago`, `2 h ago`, `4 d ago`).
pub fn ago(t: &DateTime<Utc>) -> String {
    let s = (Utc::now() - *t).num_seconds();
    match s {
        i64::MIN..0 => "just now".into(),
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// A byte count in words (`12.3 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A rate in words (`1.5/s`, `12/min`).
pub fn rate(per_second: f64) -> String {
    if per_second == 0.0 {
        "0".into()
    } else if per_second >= 1.0 {
        format!(
            "{}/s",
            super::svg::number((per_second * 10.0).round() / 10.0)
        )
    } else {
        format!(
            "{}/min",
            super::svg::number((per_second * 600.0).round() / 10.0)
        )
    }
}

/// A ratio as a percentage (`2.5 %`).
pub fn percent(r: f64) -> String {
    format!("{} %", super::svg::number((r * 1000.0).round() / 10.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_words() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 300 * 1024), "3.3 MiB");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(2.25), "2.3/s");
        assert_eq!(rate(0.5), "30/min");
        assert_eq!(percent(0.025), "2.5 %");
        assert_eq!(
            ago(&(Utc::now() - chrono::Duration::minutes(3))),
            "3 min ago"
        );
    }
}
