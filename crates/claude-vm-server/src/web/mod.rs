//! The web pages: server-rendered HTML (maud escapes everything it is given), a little
//! plain JavaScript for live updates and actions, assets embedded in the binary.
//!
//! Pages read through the engine directly; actions (send, interrupt, approve, up/down,
//! commands) call `/api/v1` from the page's script with the session's CSRF token.

mod conversation;
mod diff;
mod icons;
mod login;
mod pages;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::AppState;

pub const CSS: &str = include_str!("../../assets/app.css");
pub const JS: &str = include_str!("../../assets/app.js");

/// Routes that need a session (or token): the pages.
pub fn pages() -> Router<AppState> {
    pages::router()
}

/// Routes anyone may reach: login, logout, assets.
pub fn public() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", axum::routing::post(login::logout))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        // Fetched by browsers without cookies (a manifest is requested without credentials).
        .route("/manifest.webmanifest", get(icons::manifest))
        .route("/assets/icon.svg", get(icons::svg))
        .route("/assets/{name}", get(icons::icon_png))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

pub(crate) fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return crate::error::ApiError::new(StatusCode::NOT_FOUND, "no such API route")
            .hint("see /api/openapi.json for the routes")
            .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        layout(
            "Not found",
            None,
            html! { main { h1 { "Not found" } p { a href="/" { "Back to the workspaces" } } } },
        ),
    )
        .into_response()
}

/// The page frame: a top bar (with a logout button when there is a session, whose CSRF
/// token also goes in a meta tag for the page's script), the page, the version.
pub fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(c) = csrf { meta name="csrf-token" content=(c); }
                title { (title) " · claude-vm" }
                link rel="manifest" href="/manifest.webmanifest";
                meta name="theme-color" content="#1f2937";
                meta name="apple-mobile-web-app-capable" content="yes";
                link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
                link rel="apple-touch-icon" href="/assets/icon-192.png";
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "claude-vm" }
                    @if let Some(c) = csrf {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(c);
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                (body)
                footer.foot { "claude-vm " (claude_vm_protocol::VERSION) }
            }
        }
    }
}

/// Markdown to HTML with every piece of raw HTML in it shown as text, and only safe link
/// targets kept: model output can never inject markup or script.
pub fn markdown(text: &str) -> Markup {
    use pulldown_cmark::{Event, Options, Parser, Tag};
    let parser =
        Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|e| {
            match e {
                Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
                Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title,
                    id,
                }) => {
                    let safe = ["http://", "https://", "mailto:", "#", "/"]
                        .iter()
                        .any(|p| dest_url.starts_with(p));
                    Event::Start(Tag::Link {
                        link_type,
                        dest_url: if safe { dest_url } else { "#".into() },
                        title,
                        id,
                    })
                }
                Event::Start(Tag::Image {
                    dest_url, title, ..
                }) => Event::Text(format!("[image: {title} {dest_url}]").into()),
                Event::End(pulldown_cmark::TagEnd::Image) => Event::Text("".into()),
                other => other,
            }
        });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, parser);
    PreEscaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_never_passes_html_or_script_urls() {
        let m = markdown("# Hi\n<script>alert(1)</script>\n\n*x* <b onclick=x>y</b> [a](javascript:alert(1)) ![i](http://x/y.png)").into_string();
        assert!(!m.contains("<script"), "{m}");
        assert!(!m.contains("<b "), "{m}");
        assert!(!m.contains("javascript:"), "{m}");
        assert!(!m.contains("<img"), "{m}");
        assert!(m.contains("&lt;script&gt;"), "{m}");
        assert!(m.contains("<em>x</em>"), "{m}");
        assert!(m.contains("<h1>Hi</h1>"), "{m}");
    }
}
