//! Logging in (a one-time link or a token) and out.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout;
use crate::AppState;
use crate::auth::{self, SESSION_COOKIE};

// No `Debug` on these: they hold secrets (a login code, a token, a CSRF token).
#[derive(Default, Deserialize)]
pub struct LoginQuery {
    pub code: Option<String>,
    pub next: Option<String>,
}

#[derive(Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub token: String,
    pub next: Option<String>,
}

#[derive(Default, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    pub csrf: String,
}

/// Only a plain path on this server: never an open redirect. A browser reads `//host`,
/// `/\\host` and paths with tabs or newlines in them (which it strips) as another site,
/// so anything but a single leading `/` followed by printable ASCII without a backslash
/// goes to `/`.
pub fn local_target(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() <= 2048
                && n.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn form(error: Option<&str>, next: Option<&str>) -> maud::Markup {
    layout(
        "Log in",
        None,
        html! {
            main.login {
                h1 { "claude-vm" }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                p { "Open the login link printed by " code { "claude-vm web" } ", or paste an API token (" code { "claude-vm token create" } ")." }
                form method="post" action="/login" {
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="off" required;
                    @if let Some(n) = next { input type="hidden" name="next" value=(n); }
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

fn start_session(state: &AppState, headers: &HeaderMap, next: Option<&str>) -> Response {
    match state.auth.new_session() {
        Ok(cookie) => {
            let mut r = Redirect::to(&local_target(next)).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                auth::session_cookie(Some(&cookie), auth::secure_context(headers)),
            );
            r
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start a session: {e}"),
        )
            .into_response(),
    }
}

/// A failed login: 401 with the form, or 429 once this address failed too often.
fn refused(state: &AppState, ip: SocketAddr, message: &str, next: Option<&str>) -> Response {
    match state.auth.refuse(ip.ip()) {
        Some(wait) => too_many(wait),
        None => (StatusCode::UNAUTHORIZED, form(Some(message), next)).into_response(),
    }
}

fn too_many(wait: std::time::Duration) -> Response {
    {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            form(
                Some(&format!(
                    "Too many failed logins from this address; try again in {} seconds.",
                    wait.as_secs().max(1)
                )),
                None,
            ),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        r
    }
}

pub async fn page(
    State(state): State<AppState>,
    ConnectInfo(ip): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if let Some(code) = q.code.as_deref() {
        return if state.auth.redeem_login_code(code) {
            start_session(&state, &headers, q.next.as_deref())
        } else {
            refused(
                &state,
                ip,
                "This login link was already used or has expired. Run `claude-vm web` for a new one.",
                q.next.as_deref(),
            )
        };
    }
    if auth::cookie(&headers, SESSION_COOKIE).is_some_and(|c| state.auth.session(c).is_some()) {
        return Redirect::to(&local_target(q.next.as_deref())).into_response();
    }
    form(None, q.next.as_deref()).into_response()
}

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(ip): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if state.auth.check_token(f.token.trim()).is_some() {
        start_session(&state, &headers, f.next.as_deref())
    } else {
        refused(&state, ip, "That token is not valid.", f.next.as_deref())
    }
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    if let Some(cookie) = auth::cookie(&headers, SESSION_COOKIE) {
        match state.auth.session(cookie) {
            Some(csrf) if auth::same(&f.csrf, &csrf) => state.auth.end_session(cookie),
            Some(_) => {
                return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
            }
            None => {}
        }
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_cookie(None, auth::secure_context(&headers)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::local_target;

    #[test]
    fn only_plain_local_paths_are_redirect_targets() {
        for ok in [
            "/",
            "/w/bold-fire-1",
            "/c/abc?x=1&y=%2F",
            "/login?next=%2Fw",
        ] {
            assert_eq!(local_target(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\tevil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\x0b/evil.example",
            "/\x7f/evil.example",
            "/ /evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/\u{e9}",
        ] {
            assert_eq!(local_target(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_target(None), "/");
    }
}
