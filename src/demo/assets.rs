//! The demo page's files, compiled into the binary (no build step, no files to deploy):
//! plain HTML, CSS and vanilla JavaScript under `src/demo/assets/`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
/// `@statgate/client`'s browser bundle (client-ts/, one minified ES module without imports).
const CLIENT_JS: &str = include_str!("assets/statgate-client.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The binary is the version: a rebuilt gateway must not serve yesterday's script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

pub async fn client_js() -> Response {
    asset("text/javascript; charset=utf-8", CLIENT_JS)
}
