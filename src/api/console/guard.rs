//! What every console response and form passes.
//!
//! - Headers: `Content-Security-Policy` (scripts, styles and images from this origin
//!   only; no inline script, no `eval`; no framing; forms post here only),
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`, and
//!   `Cache-Control: no-store` on pages (they show a signed-in user's data).
//! - Forms: a cross-site POST is refused on `Sec-Fetch-Site` (or, from browsers that
//!   do not send it, a foreign `Origin`); a signed-in user's form must also carry the
//!   session's CSRF token. The cookie itself is `SameSite=Strict` and `HttpOnly`.

use poem::Request;
use poem::middleware::SetHeader;

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

/// Why a cross-site form is refused.
pub const CROSS_SITE: &str =
    "this form was sent from another site; open the console and send it from there";

/// Why a form without the session's token is refused.
pub const NO_TOKEN: &str = "this form is stale or was not sent from the console (its security token does not match); reload the page and send it again";

/// Headers of every console response.
pub fn security_headers() -> SetHeader {
    SetHeader::new()
        .overriding("Content-Security-Policy", CSP)
        .overriding("X-Content-Type-Options", "nosniff")
        .overriding("X-Frame-Options", "DENY")
        .overriding("Referrer-Policy", "same-origin")
}

/// Headers of every page (not of the hashed assets).
pub fn page_headers() -> SetHeader {
    SetHeader::new().overriding("Cache-Control", "no-store")
}

/// Whether `req` comes from a page of this console: `Sec-Fetch-Site` is `same-origin`
/// or `none` (typed or bookmarked); without it, an `Origin` (if any) is this host.
pub fn same_origin(req: &Request) -> bool {
    if let Some(site) = req.header("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (req.header("origin"), req.header("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    }
}

/// A signed-in user's form: same origin, and `sent` is the session's token `expected`.
pub fn form_allowed(req: &Request, expected: &str, sent: &str) -> Result<(), &'static str> {
    if !same_origin(req) {
        return Err(CROSS_SITE);
    }
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), sent.as_bytes()) {
        return Err(NO_TOKEN);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder()
            .method(poem::http::Method::POST)
            .uri_str("/logout");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.finish()
    }

    #[test]
    fn cross_site_forms_and_missing_tokens_are_refused() {
        let host = ("host", "127.0.0.1:28080");
        assert!(same_origin(&req(&[
            host,
            ("origin", "http://127.0.0.1:28080")
        ])));
        assert!(!same_origin(&req(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&req(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&req(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(
            same_origin(&req(&[host])),
            "no Origin: not a browser's cross-site form"
        );
        let ok = req(&[host]);
        assert_eq!(form_allowed(&ok, "t0k", "t0k"), Ok(()));
        assert_eq!(form_allowed(&ok, "t0k", "t0x"), Err(NO_TOKEN));
        assert_eq!(form_allowed(&ok, "t0k", ""), Err(NO_TOKEN));
        assert_eq!(form_allowed(&ok, "", ""), Err(NO_TOKEN));
    }
}
