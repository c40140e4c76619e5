//! Reading an image server's directory listing (nginx, Apache, any HTML with `href`s):
//! the one tarball a `latest_<Name>/` directory links to.

/// The one tarball (`.tar.gz` or `.tar.xz`) a directory listing links to.
pub(super) fn tarball_in_listing(listing: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(listing);
    let mut found: Vec<String> = Vec::new();
    let mut rest = text.as_ref();
    while let Some(i) = rest.find("href=") {
        rest = &rest[i + 5..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(end) = rest[1..].find(quote) else {
            break;
        };
        let target = &rest[1..1 + end];
        rest = &rest[1 + end..];
        let target = target.split(['?', '#']).next().unwrap_or("");
        let Some(last) = target.rsplit('/').next().filter(|l| !l.is_empty()) else {
            continue;
        };
        let Some(name) = percent_decode(last) else {
            continue;
        };
        if (name.ends_with(".tar.gz") || name.ends_with(".tar.xz")) && !found.contains(&name) {
            found.push(name);
        }
    }
    match found.len() {
        0 => Err("it links to no .tar.gz or .tar.xz".into()),
        1 => Ok(found.remove(0)),
        _ => Err(format!(
            "it links to several tarballs ({}); a latest_ directory holds one image",
            found.join(", ")
        )),
    }
}

/// `%XX` decoding of a URL path segment; `None` when it is not valid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapferry_feeds::image_store::image_stem;

    #[test]
    fn listings_of_common_servers_yield_the_tarball() {
        // nginx autoindex
        let nginx = br#"<html><head><title>Index of /latest_MISP/</title></head><body>
<h1>Index of /latest_MISP/</h1><hr><pre><a href="../">../</a>
<a href="MISP_v2.5.1_3f2a9c1.tar.gz">MISP_v2.5.1_3f2a9c1.tar.gz</a>  29-Nov-2026 10:00  3210987654
<a href="MISP_v2.5.1_3f2a9c1.tar.gz.sig">MISP_v2.5.1_3f2a9c1.tar.gz.sig</a>  29-Nov-2026 10:00  566
</pre><hr></body></html>"#;
        assert_eq!(
            tarball_in_listing(nginx).unwrap(),
            "MISP_v2.5.1_3f2a9c1.tar.gz"
        );
        // Apache, absolute links, percent-encoding, single quotes.
        let apache = b"<a href='/images/latest_MISP-modules/Modules_2.4.198%2Bx.tar.gz?C=N'>x</a>";
        assert_eq!(
            tarball_in_listing(apache).unwrap(),
            "Modules_2.4.198+x.tar.gz"
        );
    }

    #[test]
    fn hostile_or_useless_listings_are_refused() {
        assert!(tarball_in_listing(b"<a href=\"a.tar.gz\"></a><a href=\"b.tar.gz\"></a>").is_err());
        assert!(tarball_in_listing(b"<a href=\"notes.txt\"></a>").is_err());
        assert!(tarball_in_listing(b"").is_err());
        assert!(tarball_in_listing(b"href=").is_err());
        assert!(tarball_in_listing(b"href=\"unterminated.tar.gz").is_err());
        // A traversal is cut to its last segment, which the image store's name rules check.
        let t = tarball_in_listing(b"<a href=\"..%2F..%2Fetc%2Fx.tar.gz\">").unwrap();
        assert!(image_stem(&t).is_err(), "{t}");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("a%2"), Some("a%2".into()));
    }
}
