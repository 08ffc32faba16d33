//! Who may use the server, and how they prove it.
//!
//! - API clients send `Authorization: Bearer <token>`; tokens are created by
//!   `claude-vm token create` and stored as SHA-256 hashes only.
//! - Browsers log in once (a one-time login link from `claude-vm web`, or a token pasted in
//!   the login form) and then hold an HttpOnly session cookie. Every state-changing request
//!   made with the cookie must carry the session's CSRF token in `X-CSRF-Token` and, when
//!   the browser sends one, a same-origin `Origin`.
//! - Failed logins are counted per client address; too many in a window answer 429.
//!
//! Secrets are never logged: only their hashes are looked up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use claude_vm_store::{Home, Store, StoreError, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "cvm_session";
/// Header carrying the CSRF token on state-changing requests made with the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a browser session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a one-time login link works.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(15 * 60);
/// Failed logins allowed per client address in one [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Principal {
    Token { id: String, name: String },
    Session { csrf: String },
}

/// Random secret with a recognisable prefix (`cvm_…`, 256 bits).
fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the database keeps of a secret.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Constant-time comparison, for CSRF tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Credentials, over their own connection to the state database.
pub struct Auth {
    store: Mutex<Store>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Auth {
    pub fn open(home: &Home) -> Result<Auth, StoreError> {
        Ok(Auth {
            store: Mutex::new(Store::open(&home.db_path())?),
            failures: Mutex::new(HashMap::new()),
        })
    }

    fn db<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A new API token: its record and the secret, shown once.
    pub fn create_token(&self, name: &str) -> Result<(TokenRecord, String), StoreError> {
        let token = secret("cvm_");
        let id = hash(&secret(""))[..12].to_owned();
        let record = self.db(|s| s.insert_token(&id, name, &hash(&token)))?;
        Ok((record, token))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.db(|s| s.tokens())
    }

    pub fn revoke(&self, id_or_name: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.db(|s| s.revoke_token(id_or_name))
    }

    pub fn check_token(&self, token: &str) -> Option<TokenRecord> {
        self.db(|s| s.use_token(&hash(token))).ok().flatten()
    }

    /// A one-time login code for a link (`/login?code=…`).
    pub fn mint_login_code(&self) -> Result<String, StoreError> {
        let code = secret("");
        let expires = now_unix() + LOGIN_CODE_TTL.as_secs() as i64;
        self.db(|s| {
            s.purge_expired_credentials(now_unix())?;
            s.insert_login_code(&hash(&code), expires)
        })?;
        Ok(code)
    }

    pub fn redeem_login_code(&self, code: &str) -> bool {
        self.db(|s| s.redeem_login_code(&hash(code), now_unix()))
            .unwrap_or(false)
    }

    /// Start a browser session: the cookie value.
    pub fn new_session(&self) -> Result<String, StoreError> {
        let cookie = secret("");
        let csrf = secret("");
        let expires = now_unix() + SESSION_TTL.as_secs() as i64;
        self.db(|s| s.insert_session(&hash(&cookie), &csrf, expires))?;
        Ok(cookie)
    }

    /// The CSRF token of the session with this cookie value, if it is live.
    pub fn session(&self, cookie: &str) -> Option<String> {
        self.db(|s| s.session_csrf(&hash(cookie), now_unix()))
            .ok()
            .flatten()
    }

    pub fn end_session(&self, cookie: &str) {
        let _ = self.db(|s| s.delete_session(&hash(cookie)));
    }

    /// How long this address must wait, if it failed too often.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = map.get(&ip)?;
        let elapsed = f.since.elapsed();
        (f.count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Count a failed login or a wrong token from this address.
    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        if f.since.elapsed() >= FAILURE_WINDOW {
            *f = Failures {
                count: 0,
                since: Instant::now(),
            };
        }
        f.count += 1;
        tracing::warn!(client = %ip, failures = f.count, "failed authentication");
    }
}

/// The value of one cookie.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a new session (or, with `None`, one that clears it).
pub fn session_cookie(value: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let s = match value {
        Some(v) => format!(
            "{SESSION_COOKIE}={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&s).expect("cookie is ASCII")
}

/// Whether the browser will keep a `Secure` cookie: the page came over HTTPS (a proxy in
/// front says so), or from a loopback host, which browsers treat as secure.
pub fn secure_context(headers: &HeaderMap) -> bool {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    forwarded_https
        || name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser's `Origin` (if any) is this server: scheme, host and port.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    state.hosts.origin_allowed(origin, host, forwarded_https)
}

/// The client address: the peer of the TCP connection.
fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn too_many(wait: Duration) -> Response {
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed logins from this address",
    )
    .hint(format!("try again in {} seconds", wait.as_secs().max(1)))
    .into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs().max(1)),
    );
    r
}

/// Who is calling, from the headers; `Err` for a wrong bearer token.
fn identify(state: &AppState, req: &Request) -> Result<Option<Principal>, ()> {
    let headers = req.headers();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(())?;
        return match state.auth.check_token(token) {
            Some(t) => Ok(Some(Principal::Token {
                id: t.id,
                name: t.name,
            })),
            None => Err(()),
        };
    }
    Ok(cookie(headers, SESSION_COOKIE)
        .and_then(|c| state.auth.session(c))
        .map(|csrf| Principal::Session { csrf }))
}

/// Middleware for `/api/...`: 401 without credentials, 403 on a cross-site or CSRF-less
/// state change made with the cookie.
pub async fn require_api(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
    if let Some(wait) = state.auth.blocked(ip) {
        return too_many(wait);
    }
    let principal = match identify(&state, &req) {
        Ok(Some(p)) => p,
        Ok(None) => {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "authentication required")
                .hint("send `Authorization: Bearer <token>` (create one with `claude-vm token create`)")
                .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        Err(()) => {
            state.auth.failed(ip);
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "invalid or revoked token")
                .hint("create a new one with `claude-vm token create`")
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return r;
        }
    };
    if let Principal::Session { csrf } = &principal
        && !is_safe(req.method())
    {
        let given = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_origin(&state, req.headers()) || !same(given, csrf) {
            return ApiError::new(StatusCode::FORBIDDEN, "cross-site request refused")
                .hint("state-changing requests made with the session cookie need the X-CSRF-Token header and this server's own Origin (behind a proxy, start the server with --public-url)")
                .into_response();
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Middleware for web pages: a login redirect instead of 401.
pub async fn require_page(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match identify(&state, &req) {
        Ok(Some(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        _ => {
            let next_path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = if next_path == "/" {
                "/login".to_owned()
            } else {
                format!("/login?next={}", crate::web::url_encode(next_path))
            };
            Redirect::to(&target).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_comparisons() {
        assert_eq!(hash("abc").len(), 64);
        assert_ne!(hash("abc"), hash("abd"));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        let s = secret("cvm_");
        assert!(s.starts_with("cvm_") && s.len() == 4 + 43);
    }

    #[test]
    fn cookies_are_parsed_and_origins_compared() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cvm_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn failures_block_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.ensure().unwrap();
        let auth = Auth::open(&home).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            auth.failed(ip);
        }
        assert!(auth.blocked(ip).is_none());
        auth.failed(ip);
        assert!(auth.blocked(ip).is_some());
        assert!(auth.blocked("10.0.0.2".parse().unwrap()).is_none());
        let (rec, token) = auth.create_token("ci").unwrap();
        assert_eq!(auth.check_token(&token).unwrap().id, rec.id);
        assert!(auth.check_token("cvm_wrong").is_none());
        let code = auth.mint_login_code().unwrap();
        assert!(auth.redeem_login_code(&code));
        assert!(!auth.redeem_login_code(&code));
        let cookie = auth.new_session().unwrap();
        assert!(auth.session(&cookie).is_some());
        auth.end_session(&cookie);
        assert!(auth.session(&cookie).is_none());
    }
}
