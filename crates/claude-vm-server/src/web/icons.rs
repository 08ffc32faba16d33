//! The app's icon (a terminal prompt on a dark rounded square) and the web app manifest that
//! lets a phone add the web UI to its home screen. The PNG sizes phones ask for are drawn
//! once, at first request, from the same shapes as the SVG.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const BACKGROUND: [u8; 3] = [0x1f, 0x29, 0x37];
const FOREGROUND: [u8; 3] = [0x34, 0xd3, 0x99];

pub const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><rect width="100" height="100" rx="20" fill="#1f2937"/><path d="M28 32 L48 50 L28 68" fill="none" stroke="#34d399" stroke-width="7" stroke-linecap="round" stroke-linejoin="round"/><rect x="52" y="63" width="22" height="7" rx="3" fill="#34d399"/></svg>"##;

/// Distance from `p` to the segment `a`-`b`.
fn to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

/// The icon's pixel at `(x, y)` on a 100×100 canvas: RGBA.
fn pixel(x: f32, y: f32) -> [u8; 4] {
    // Rounded corners (radius 20), transparent outside.
    let (cx, cy) = (x.clamp(20.0, 80.0), y.clamp(20.0, 80.0));
    if ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() > 20.0 {
        return [0, 0, 0, 0];
    }
    let chevron = to_segment((x, y), (28.0, 32.0), (48.0, 50.0)).min(to_segment(
        (x, y),
        (48.0, 50.0),
        (28.0, 68.0),
    ));
    let underscore = (52.0..=74.0).contains(&x) && (63.0..=70.0).contains(&y);
    let [r, g, b] = if chevron <= 3.5 || underscore {
        FOREGROUND
    } else {
        BACKGROUND
    };
    [r, g, b, 255]
}

/// A `size`×`size` PNG of the icon (RGBA, zlib-compressed).
pub fn png(size: u32) -> Vec<u8> {
    use std::io::Write;
    let mut raw = Vec::with_capacity((size * (size * 4 + 1)) as usize);
    let scale = 100.0 / size as f32;
    for y in 0..size {
        raw.push(0); // no filter
        for x in 0..size {
            raw.extend(pixel((x as f32 + 0.5) * scale, (y as f32 + 0.5) * scale));
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).expect("in memory");
    let idat = z.finish().expect("in memory");
    let mut ihdr = Vec::new();
    ihdr.extend(size.to_be_bytes());
    ihdr.extend(size.to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]); // 8 bits, RGBA, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat), (b"IEND", &[])] {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.finalize().to_be_bytes());
    }
    out
}

static PNG_192: LazyLock<Vec<u8>> = LazyLock::new(|| png(192));
static PNG_512: LazyLock<Vec<u8>> = LazyLock::new(|| png(512));

pub const MANIFEST: &str = r##"{
  "name": "claude-vm",
  "short_name": "claude-vm",
  "description": "Your coding agents' workspaces, conversations and changes",
  "start_url": "/",
  "scope": "/",
  "display": "standalone",
  "background_color": "#1f2937",
  "theme_color": "#1f2937",
  "icons": [
    {"src": "/assets/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
    {"src": "/assets/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
    {"src": "/assets/icon.svg", "sizes": "any", "type": "image/svg+xml"}
  ]
}"##;

pub async fn manifest() -> Response {
    super::asset("application/manifest+json", MANIFEST)
}

pub async fn svg() -> Response {
    super::asset("image/svg+xml", SVG)
}

pub async fn icon_png(Path(name): Path<String>) -> Response {
    let body: &'static [u8] = match name.as_str() {
        "icon-192.png" => &PNG_192,
        "icon-512.png" => &PNG_512,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_png_is_well_formed() {
        let p = super::png(48);
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&p[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(p[16..20].try_into().unwrap()), 48);
        assert_eq!(&p[p.len() - 8..p.len() - 4], b"IEND");
        // A corner is transparent, the middle of the chevron green.
        assert_eq!(super::pixel(1.0, 1.0)[3], 0);
        assert_eq!(super::pixel(38.0, 41.0), [0x34, 0xd3, 0x99, 255]);
        assert_eq!(super::pixel(60.0, 30.0), [0x1f, 0x29, 0x37, 255]);
    }
}
