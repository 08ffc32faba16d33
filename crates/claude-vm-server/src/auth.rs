//! Who may use the server, and how they prove it.
//!
//! - API clients send `Authorization: Bearer <token>`; tokens are created by
//!   `claude-vm token create` and stored as SHA-256 hashes only.
//! - Browsers log in once (a one-time login link from `claude-vm web`, or a token pasted in
//!   the login form) and then hold an HttpOnly session cookie. Every state-changing request
//!   made with the cookie must carry the session's CSRF token in `X-CSRF-Token` and, when
//!   the browser sends one, a same-origin `Origin`.
//! - Failed logins and wrong tokens are counted per client address (an IPv6 client per
//!   /64); once too many fail within a window, further *failures* answer 429. Valid
//!   credentials are never refused by the count: behind a reverse proxy every client has
//!   the proxy's address, and a guesser must not lock the owner out.
//!
//! Secrets are never logged: only their hashes are looked up.

use std::collections::{HashMap, VecDeque};
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
/// Addresses whose failures are remembered at once; past it the oldest are forgotten.
pub const MAX_TRACKED: usize = 10_000;

/// Who made a request.
#[derive(Clone)]
pub enum Principal {
    Token { id: String, name: String },
    Session { csrf: String },
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Token { id, name } => f
                .debug_struct("Token")
                .field("id", id)
                .field("name", name)
                .finish(),
            Principal::Session { .. } => f
                .debug_struct("Session")
                .field("csrf", &"********")
                .finish(),
        }
    }
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

/// Failed attempts per address, at most [`MAX_TRACKED`] addresses: `order` holds them
/// oldest window first (an entry whose window restarted is found stale there and skipped).
#[derive(Default)]
struct FailureTable {
    by_addr: HashMap<IpAddr, Failures>,
    order: VecDeque<(IpAddr, Instant)>,
}

impl FailureTable {
    fn record(&mut self, ip: IpAddr) -> u32 {
        let now = Instant::now();
        let fresh = match self.by_addr.get_mut(&ip) {
            Some(f) if f.since.elapsed() < FAILURE_WINDOW => {
                f.count += 1;
                return f.count;
            }
            Some(_) => true,
            None => false,
        };
        if !fresh {
            while self.by_addr.len() >= MAX_TRACKED {
                self.evict_oldest();
            }
        }
        self.by_addr.insert(
            ip,
            Failures {
                count: 1,
                since: now,
            },
        );
        self.order.push_back((ip, now));
        // Stale entries accumulate only while windows restart; keep the queue bounded too.
        if self.order.len() > 2 * MAX_TRACKED {
            let live = &self.by_addr;
            self.order
                .retain(|(ip, since)| live.get(ip).is_some_and(|f| f.since == *since));
        }
        1
    }

    fn evict_oldest(&mut self) {
        while let Some((ip, since)) = self.order.pop_front() {
            if self.by_addr.get(&ip).is_some_and(|f| f.since == since) {
                self.by_addr.remove(&ip);
                return;
            }
        }
        // The queue lost track (cannot happen): forget everything rather than grow.
        self.by_addr.clear();
    }

    fn get(&self, ip: &IpAddr) -> Option<&Failures> {
        self.by_addr.get(ip)
    }

    fn len(&self) -> usize {
        self.by_addr.len()
    }
}

/// The unit failures are counted for: the address, or an IPv6 address's /64 (one client
/// usually has a whole /64).
fn failure_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(seg))
            }
        },
        v4 => v4,
    }
}

/// Credentials, over their own connection to the state database.
pub struct Auth {
    store: Mutex<Store>,
    failures: Mutex<FailureTable>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    pub fn open(home: &Home) -> Result<Auth, StoreError> {
        Ok(Auth {
            store: Mutex::new(Store::open(&home.db_path())?),
            failures: Mutex::new(FailureTable::default()),
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

    /// How long this address must wait before its next failure is even looked at, if it
    /// failed too often. Asked only after credentials were found wrong.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = map.get(&failure_key(ip))?;
        let elapsed = f.since.elapsed();
        (f.count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Count a failed login or a wrong token from this address.
    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.record(failure_key(ip));
        tracing::warn!(client = %ip, failures = count, "failed authentication");
    }

    /// A failed attempt: 429 if this address already failed too often (not counted again),
    /// else counted and `None` (the caller answers 401).
    pub fn refuse(&self, ip: IpAddr) -> Option<Duration> {
        let wait = self.blocked(ip);
        if wait.is_none() {
            self.failed(ip);
        }
        wait
    }

    /// Addresses with failures remembered (bounded by [`MAX_TRACKED`]).
    pub fn tracked(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
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
/// state change made with the cookie, 429 for a wrong token from an address that sent too
/// many (valid credentials always pass).
pub async fn require_api(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
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
            if let Some(wait) = state.auth.refuse(ip) {
                return too_many(wait);
            }
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

/// Middleware for web pages: a login redirect instead of 401 (a wrong bearer token counts
/// as a failure, as on the API).
pub async fn require_page(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let identity = identify(&state, &req);
    if identity.is_err()
        && let Some(wait) = state.auth.refuse(client_ip(&req))
    {
        return too_many(wait);
    }
    match identity {
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
                format!(
                    "/login?next={}",
                    claude_vm_api::encode::query_value(next_path)
                )
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
    fn principals_do_not_debug_print_secrets() {
        let p = Principal::Session {
            csrf: "csrf-secret".into(),
        };
        assert!(!format!("{p:?}").contains("csrf-secret"));
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let mut t = FailureTable::default();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            t.record(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(t.len(), MAX_TRACKED);
        // The oldest were forgotten, the newest kept.
        assert!(t.get(&IpAddr::from(0u32.to_be_bytes())).is_none());
        let last = IpAddr::from((MAX_TRACKED as u32 + 499).to_be_bytes());
        assert_eq!(t.get(&last).unwrap().count, 1);
        assert_eq!(t.record(last), 2);
        assert!(t.order.len() <= 2 * MAX_TRACKED);
        // One IPv6 client is one /64.
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(failure_key(a), failure_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(failure_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
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
