//! Supervisor control through the api.

use serde_json::{Value, json};

use super::bearer;
use crate::helpers::api_stack;

#[test]
fn system_routes_drive_the_supervisor_for_admins_only() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    let (status, _, units) = api.call("GET", "/api/v1/system/units", &auth, None);
    assert_eq!(status, 200, "{units}");
    let state = |u: &Value, n: &str| {
        u.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .map(|x| x["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&units, "postgresql").as_deref(), Some("ready"));
    assert_eq!(state(&units, "api").as_deref(), Some("ready"));
    // Re-running the migrate oneshot goes through the control socket and waits for it.
    let (status, _, done) = api.call("POST", "/api/v1/system/units/migrate/start", &auth, None);
    assert_eq!(status, 200, "{done}");
    assert_eq!(state(&done, "migrate").as_deref(), Some("exited"));
    assert_eq!(
        api.call("POST", "/api/v1/system/units/nope/restart", &auth, None)
            .0,
        404
    );
    assert_eq!(
        api.call("POST", "/api/v1/system/units/migrate/explode", &auth, None)
            .0,
        400
    );
    // Editors and viewers may not.
    let body = json!({"username": "eddie", "password": "editor-password-1", "role": "editor"});
    api.call("POST", "/api/v1/users", &auth, Some(&body));
    let e = bearer(&api.login("eddie", "editor-password-1").0);
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/system/units",
            &[("Authorization", &e)],
            None
        )
        .0,
        403
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/system/units/migrate/start",
            &[("Authorization", &e)],
            None
        )
        .0,
        403
    );
}
