//! The pages behind the login.

use axum::Router;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::html;

use super::layout;
use crate::AppState;
use crate::auth::Principal;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(workspaces))
}

fn csrf(p: &Principal) -> Option<&str> {
    match p {
        Principal::Session { csrf } => Some(csrf),
        Principal::Token { .. } => None,
    }
}

async fn workspaces(State(s): State<AppState>, Extension(p): Extension<Principal>) -> Response {
    let list = s.engine.list_detailed().await;
    layout(
        "Workspaces",
        csrf(&p),
        html! {
            main {
                h1 { "Workspaces" }
                @match list {
                    Ok((views, _)) => {
                        ul.workspaces {
                            @for w in &views {
                                li { a href={"/w/" (w.name)} { (w.name) } " " span.status { (format!("{:?}", w.status).to_lowercase()) } }
                            }
                        }
                    }
                    Err(e) => { p.error { (e.to_string()) } }
                }
            }
        },
    )
    .into_response()
}
