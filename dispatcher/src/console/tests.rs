use super::*;

/// The colours `:root` of the stylesheet declares, by name.
fn palette() -> Vec<(String, [f64; 3])> {
    let css = STYLE.body;
    let root = css
        .split_once(":root {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(block, _)| block)
        .expect("the stylesheet has a :root block");
    root.split(';')
        .filter_map(|decl| {
            let (name, value) = decl.trim().split_once(':')?;
            let hex = value.trim().strip_prefix('#')?;
            let channel =
                |i: usize| f64::from(u8::from_str_radix(&hex[i..i + 2], 16).expect("a hex colour"));
            Some((name.trim().to_owned(), [channel(0), channel(2), channel(4)]))
        })
        .collect()
}

/// WCAG 2 relative luminance and contrast ratio.
fn luminance([r, g, b]: [f64; 3]) -> f64 {
    let linear = |c: f64| {
        let c = c / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
}

fn contrast(a: [f64; 3], b: [f64; 3]) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

#[test]
fn the_contrast_formula_is_right() {
    assert!((contrast([0.0; 3], [255.0; 3]) - 21.0).abs() < 1e-9);
    assert!((contrast([119.0; 3], [255.0; 3]) - 4.48).abs() < 0.01);
}

#[test]
fn every_text_colour_reaches_aa_contrast_on_its_background() {
    let colours = palette();
    let get = |name: &str| {
        colours
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("{name} is not declared in :root"))
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, _) in &colours {
        if let Some(stem) = name.strip_suffix("-fg") {
            pairs.push((name.clone(), format!("{stem}-bg")));
        }
    }
    for text in ["--text", "--muted", "--link"] {
        for background in ["--bg", "--panel"] {
            pairs.push((text.into(), background.into()));
        }
    }
    assert!(pairs.len() > 20, "{pairs:?}");
    for (fg, bg) in pairs {
        let ratio = contrast(get(&fg), get(&bg));
        assert!(ratio >= 4.5, "{fg} on {bg}: {ratio:.2}:1, below AA (4.5:1)");
    }
}

#[test]
fn assets_come_from_the_dispatcher_only_and_data_is_never_markup() {
    for asset in [&*PAGE, &*SCRIPT, &*STYLE] {
        for scheme in ["http://", "https://", "//cdn"] {
            assert!(!asset.body.contains(scheme), "an asset refers to {scheme}");
        }
    }
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!SCRIPT.body.contains(sink), "the script uses {sink}");
    }
    assert!(
        !SCRIPT.body.contains("localStorage"),
        "the token must not outlive the tab"
    );
}

#[test]
fn an_asset_is_served_with_its_policy_and_revalidated() {
    let response = serve(&SCRIPT, &HeaderMap::new());
    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers();
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
    assert!(CSP.contains("script-src 'self'") && CSP.contains("frame-ancestors 'none'"));
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = h[header::ETAG].clone();

    let mut again = HeaderMap::new();
    again.insert(header::IF_NONE_MATCH, etag.clone());
    let response = serve(&SCRIPT, &again);
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()[header::ETAG], etag);
    assert_ne!(PAGE.etag, SCRIPT.etag);
}
