//! The web UI: static assets compiled into the binary and served at `/` and `/ui/*`.
//!
//! The UI is a plain HTML page with one JavaScript module and one stylesheet (no framework, no
//! Node build, no external CDN); it talks to `/api/v1` with the session cookie and follows the
//! server-sent-events stream. These routes are public: the login page must load before there is
//! a session, and the assets hold no data (everything the UI shows comes from the API, which
//! checks the session).
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and connections only
//! from this origin, no inline script or style, no framing. Assets are not fingerprinted, so
//! they are sent with `Cache-Control: no-cache` and a strong `ETag`: a browser revalidates each
//! load (a cheap 304) and a new binary's assets are never hidden behind a stale cache.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The Content-Security-Policy of every UI answer.
///
/// `img-src data:` admits the empty `data:` favicon (which stops the browser asking for
/// `/favicon.ico`); `connect-src 'self'` covers both `fetch` and `EventSource`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../ui/index.html"),
};
const APP_JS: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../ui/app.js"),
};
const STYLE_CSS: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../ui/style.css"),
};

/// The UI's routes (all `GET`, and `HEAD` which axum derives from it), for route listings
/// such as the server's authentication test and OpenAPI check.
pub const ROUTES: &[&str] = &["/", "/ui/", "/ui/index.html", "/ui/app.js", "/ui/style.css"];

/// The router serving the UI. Merge it into the server's router outside the session layer
/// (`router.merge(ui::routes())`): the login page is served to anonymous visitors.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/ui/", get(index))
        .route("/ui/index.html", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style_css))
}

async fn index(headers: HeaderMap) -> Response {
    static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| etag_of(INDEX.body));
    serve(&INDEX, &ETAG, &headers)
}

async fn app_js(headers: HeaderMap) -> Response {
    static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| etag_of(APP_JS.body));
    serve(&APP_JS, &ETAG, &headers)
}

async fn style_css(headers: HeaderMap) -> Response {
    static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| etag_of(STYLE_CSS.body));
    serve(&STYLE_CSS, &ETAG, &headers)
}

/// A strong entity tag: the first 128 bits of the content's SHA-256, quoted.
fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let tag = format!("\"{}\"", hex::encode(&digest[..16]));
    // Quotes and hex digits are visible ASCII, always a valid header value.
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(value) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate == ours || candidate.strip_prefix("W/") == Some(ours)
    })
}

fn serve(asset: &Asset, etag: &HeaderValue, request: &HeaderMap) -> Response {
    let mut response = if not_modified(request, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).expect("assets are UTF-8")
    }

    #[test]
    fn answers_carry_type_cache_and_security_headers() {
        let etag = etag_of(APP_JS.body);
        let response = serve(&APP_JS, &etag, &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::ETAG], etag);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
    }

    #[test]
    fn a_matching_if_none_match_gets_304_and_a_stale_one_the_body() {
        let etag = etag_of(STYLE_CSS.body);
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, etag.clone());
        assert_eq!(
            serve(&STYLE_CSS, &etag, &request).status(),
            StatusCode::NOT_MODIFIED
        );
        let weak = HeaderValue::from_str(&format!("\"x\", W/{}", etag.to_str().unwrap())).unwrap();
        request.insert(header::IF_NONE_MATCH, weak);
        assert_eq!(
            serve(&STYLE_CSS, &etag, &request).status(),
            StatusCode::NOT_MODIFIED
        );
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"stale\""));
        assert_eq!(serve(&STYLE_CSS, &etag, &request).status(), StatusCode::OK);
        assert_ne!(etag_of(STYLE_CSS.body), etag_of(APP_JS.body));
    }

    #[test]
    fn the_page_loads_only_its_own_assets_and_no_inline_code() {
        let html = text(&INDEX);
        assert!(html.contains(r#"<script type="module" src="/ui/app.js"></script>"#));
        assert!(html.contains(r#"href="/ui/style.css""#));
        // The CSP forbids inline script and style: none may be written.
        assert_eq!(
            html.matches("<script").count(),
            1,
            "one external module only"
        );
        assert!(!html.contains("<style") && !html.contains(" style="));
        assert!(!html.contains(" onclick=") && !html.contains("javascript:"));
        for asset in [&INDEX, &APP_JS, &STYLE_CSS] {
            let t = text(asset);
            // No CDN, font or icon host: the only absolute URL is the SVG namespace name.
            let urls = t.matches("http://").count() + t.matches("https://").count();
            let svg_ns = t.matches("http://www.w3.org/2000/svg").count();
            assert_eq!(urls, svg_ns, "external URL in an asset");
        }
    }

    #[test]
    fn the_script_never_parses_api_data_as_html() {
        let js = text(&APP_JS);
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
            "sessionStorage",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
        // Mutating requests carry the CSRF header the API demands.
        assert!(js.contains("const CSRF_HEADER = 'X-Capstan-CSRF';"));
        assert!(js.contains("if (method !== 'GET') headers[CSRF_HEADER] = '1';"));
    }
}
