//! Alert rules: the rules of the categories the user reads, a backtest of a rule
//! over the last day before it is created, and the notifications sent.

use std::sync::Arc;

use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;
use uuid::Uuid;

use super::frame::Frame;
use super::system::Confirm;
use super::{Fields, Signed, category_names, done, or_page, page, urlencoded};
use crate::api::AppState;
use crate::api::alerts::{self, Preview};
use crate::model::alert::{AlertKind, AlertRule, Notification, Op};

/// The rule form, as typed.
#[derive(Debug, Clone, Default)]
pub struct RuleForm {
    name: String,
    category: String,
    kind: String,
    field: String,
    op: String,
    value: String,
    target: String,
    window: String,
    webhooks: String,
}

impl RuleForm {
    fn read(f: &Fields) -> RuleForm {
        let g = |k: &str| f.get(k).trim().to_string();
        RuleForm {
            name: g("name"),
            category: g("category"),
            kind: g("kind"),
            field: g("field"),
            op: g("op"),
            value: g("value"),
            target: g("target"),
            window: g("window"),
            webhooks: f.get("webhooks").to_string(),
        }
    }

    /// The rule it states, or why not (the rest is checked against the schema).
    fn rule(&self) -> Result<AlertRule, Vec<String>> {
        let mut errors = vec![];
        let kind = match self.kind.as_str() {
            "absence" => AlertKind::Absence,
            _ => AlertKind::Threshold,
        };
        let value = if self.value.is_empty() {
            None
        } else {
            match self.value.parse::<f64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push(format!("value: `{}` is not a number", self.value));
                    None
                }
            }
        };
        if !crate::model::schema::valid_identifier(&self.category) {
            errors.push("category: choose a category".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        Ok(AlertRule {
            id: Uuid::nil(),
            name: self.name.clone(),
            category: self.category.clone(),
            kind,
            field: opt(&self.field).filter(|_| kind == AlertKind::Threshold),
            op: Op::parse(&self.op).filter(|_| kind == AlertKind::Threshold),
            value: value.filter(|_| kind == AlertKind::Threshold),
            target: opt(&self.target),
            window: opt(&self.window).unwrap_or_else(|| "60s".into()),
            webhooks: self
                .webhooks
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            enabled: true,
        })
    }
}

#[derive(TemplateSimple)]
#[template(path = "alerts.stpl")]
struct Alerts<'a> {
    frame: &'a Frame,
    category: &'a str,
    categories: Vec<String>,
    rules: Vec<AlertRule>,
    notifications: Vec<Notification>,
    form: RuleForm,
    preview: Option<Preview>,
    errors: Vec<String>,
    done: Option<&'a str>,
}

/// Notifications the alerts page shows.
const NOTIFICATIONS: i64 = 200;

/// The alerts page of `category` (None: every category the user reads).
async fn alerts_page(
    state: &AppState,
    s: &Signed,
    category: Option<&str>,
    form: RuleForm,
    preview: Option<Preview>,
    errors: Vec<String>,
    done: Option<&str>,
) -> Response {
    let categories: Vec<String> = category_names(state)
        .await
        .into_iter()
        .filter(|c| s.principal.require_read(c).is_ok())
        .collect();
    let rules = match alerts::rules(state, category).await {
        Ok(r) => r
            .into_iter()
            .filter(|r| s.principal.require_read(&r.category).is_ok())
            .collect(),
        Err(e) => return s.failure("alerts", e),
    };
    let notifications = match category {
        Some(c) => alerts::notifications(state, &s.principal, Some(c), NOTIFICATIONS).await,
        None if s.principal.require_admin().is_ok() => {
            alerts::notifications(state, &s.principal, None, NOTIFICATIONS).await
        }
        None => Ok(vec![]),
    };
    let notifications = match notifications {
        Ok(n) => n,
        Err(e) => return s.failure("alerts", e),
    };
    page(Alerts {
        frame: &s.frame("Alerts", "alerts"),
        category: category.unwrap_or(""),
        categories,
        rules,
        notifications,
        form,
        preview,
        errors,
        done,
    })
}

#[handler]
pub async fn rules_page(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let form = RuleForm {
        category: q.get("category").into(),
        kind: "threshold".into(),
        op: "gt".into(),
        window: "60s".into(),
        ..RuleForm::default()
    };
    alerts_page(
        &state,
        &s,
        q.opt("category"),
        form,
        None,
        vec![],
        q.opt("done"),
    )
    .await
}

/// The rule form: `preview` backtests it over the last day; `create` defines it.
#[handler]
pub async fn alert_form(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    let s = or_page!(super::sender(&state, req, "alerts", &f).await);
    let form = RuleForm::read(&f);
    let shown = Some(form.category.clone()).filter(|c| !c.is_empty());
    let rule = match form.rule() {
        Ok(r) => r,
        Err(errors) => {
            return alerts_page(&state, &s, shown.as_deref(), form, None, errors, None).await;
        }
    };
    if f.has("create") {
        return match alerts::create(&state, &s.principal, rule).await {
            Ok(r) => {
                let to = format!("/alerts?category={}", urlencoded(&r.category));
                done(&to, &format!("alert rule {} defined", r.name))
            }
            Err(e) => match super::refused(e) {
                Ok((_, errors)) => {
                    alerts_page(&state, &s, shown.as_deref(), form, None, errors, None).await
                }
                Err(e) => s.failure("alerts", e),
            },
        };
    }
    match alerts::preview(&state, &s.principal, &rule).await {
        Ok(p) => alerts_page(&state, &s, shown.as_deref(), form, Some(p), vec![], None).await,
        Err(e) => match super::refused(e) {
            Ok((_, errors)) => {
                alerts_page(&state, &s, shown.as_deref(), form, None, errors, None).await
            }
            Err(e) => s.failure("alerts", e),
        },
    }
}

#[handler]
pub async fn confirm_delete_rule(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(key): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    if let Err(d) = s.principal.require_editor() {
        return s.failure("alerts", d.into());
    }
    let frame = s.frame("Delete an alert rule", "alerts");
    let mut c = Confirm::new(
        &frame,
        format!("Delete the alert rule {key}?"),
        format!("/alerts/{}/delete", urlencoded(&key)),
        "Delete the rule".into(),
    );
    c.alone = "It stops firing; the notifications it sent stay in the history.".into();
    c.cancel = "/alerts".into();
    page(c)
}

#[handler]
pub async fn delete_rule(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(key): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "alerts", &f).await);
    match alerts::delete(&state, &s.principal, &key).await {
        Ok(()) => done("/alerts", "the rule was deleted"),
        Err(e) => s.failure("alerts", e),
    }
}
