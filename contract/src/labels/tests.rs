use proptest::prelude::*;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn parse_err(text: &str) -> SelectorError {
    match Selector::parse(text) {
        Ok(s) => panic!("{text:?} should not parse, got {s}"),
        Err(e) => e,
    }
}

#[test]
fn keys_at_the_length_limits() {
    assert_eq!(key_problem(&"a".repeat(63)), None);
    assert_eq!(
        key_problem(&"a".repeat(64)).as_deref(),
        Some("must be 63 characters or less")
    );
    let prefix = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(prefix.len(), 253);
    assert_eq!(key_problem(&format!("{prefix}/{}", "n".repeat(63))), None);
    let problem = key_problem(&format!("{prefix}c/name")).unwrap();
    assert!(
        problem.contains("prefix") && problem.contains("253 characters or less"),
        "{problem}"
    );
    let problem = key_problem(&format!("example.com/{}", "n".repeat(64))).unwrap();
    assert!(
        problem.contains("name") && problem.contains("63 characters or less"),
        "{problem}"
    );
}

#[test]
fn keys_follow_the_qualified_name_rules() {
    for good in [
        "app",
        "A",
        "9",
        "My_app.v-2",
        "example.com/tier",
        "a-b.c9/x",
        "in",
    ] {
        assert_eq!(key_problem(good), None, "{good}");
    }
    for (bad, rule) in [
        ("", "must not be empty"),
        ("-app", "start and end"),
        ("app_", "start and end"),
        (".app", "start and end"),
        ("a b", "must consist of"),
        ("app*", "must consist of"),
        ("ünï", "must consist of"),
        ("/app", "prefix (before \"/\") must not be empty"),
        ("example.com/", "name (after \"/\") must not be empty"),
        ("a/b/c", "at most one \"/\""),
        (
            "Example.com/app",
            "prefix (before \"/\") must be a DNS subdomain: lowercase",
        ),
        ("ex_ample.com/app", "lowercase letters, digits, '-' and '.'"),
        ("example..com/app", "each part between dots"),
        ("example.-com/app", "each part between dots"),
        ("-example.com/app", "each part between dots"),
        ("example.com/-app", "name (after \"/\") must start and end"),
    ] {
        let problem = key_problem(bad).unwrap_or_else(|| panic!("{bad:?} should be refused"));
        assert!(problem.contains(rule), "{bad:?}: {problem}");
    }
}

#[test]
fn values_may_be_empty_and_follow_the_name_rules() {
    for good in ["", "prod", "a", &"v".repeat(63), "1.2.3", "eu_west-1", "in"] {
        assert_eq!(value_problem(good), None, "{good}");
    }
    for (bad, rule) in [
        (&"v".repeat(64) as &str, "must be 63 characters or less"),
        ("-prod", "start and end"),
        ("prod.", "start and end"),
        ("a/b", "must consist of"),
        ("a b", "must consist of"),
    ] {
        let problem = value_problem(bad).unwrap_or_else(|| panic!("{bad:?} should be refused"));
        assert!(problem.contains(rule), "{bad:?}: {problem}");
    }
}

#[test]
fn check_labels_names_the_field_and_caps_what_it_quotes() {
    let long = "x".repeat(1000);
    let checked = check_labels(&labels(&[
        ("env", "prod"),
        ("tier", "-web"),
        ("Bad/key", "fine"),
        (&long, "v"),
    ]));
    assert_eq!(checked.len(), 3, "{checked:?}");
    let tier = checked.iter().find(|e| e.field == "labels.tier").unwrap();
    assert!(
        tier.reason
            .starts_with("\"-web\" is not a valid label value: must start"),
        "{}",
        tier.reason
    );
    let key_errors: Vec<_> = checked.iter().filter(|e| e.field == "labels").collect();
    assert_eq!(key_errors.len(), 2);
    assert!(
        key_errors
            .iter()
            .any(|e| e.reason.starts_with("\"Bad/key\" is not a valid label key"))
    );
    let long_error = key_errors.iter().find(|e| e.reason.contains('…')).unwrap();
    assert!(long_error.reason.len() < 200, "{}", long_error.reason);
    assert!(long_error.reason.contains("63 characters or less"));
    assert!(check_labels(&labels(&[("env", ""), ("example.com/tier", "web")])).is_empty());
}

#[test]
fn every_operator_matches_and_fails_to_match() {
    let cluster = labels(&[("env", "prod"), ("region", "eu"), ("gpu", "")]);
    for (selector, expected) in [
        ("env=prod", true),
        ("env=dev", false),
        ("env==prod", true),
        ("env==dev", false),
        ("env!=dev", true),
        ("env!=prod", false),
        ("region in (eu,us)", true),
        ("region in (us,ap)", false),
        ("region notin (us,ap)", true),
        ("region notin (eu,us)", false),
        ("gpu", true),
        ("tpu", false),
        ("!tpu", true),
        ("!gpu", false),
        ("gpu=", true),
        ("env=", false),
        ("gpu in (a,)", true),
        ("gpu in (a)", false),
        ("env=prod,region in (eu,us),gpu,!tpu", true),
        ("env=prod,region=us", false),
        ("", true),
    ] {
        assert_eq!(parse(selector).matches(&cluster), expected, "{selector}");
    }
}

#[test]
fn a_missing_key_satisfies_only_negative_requirements() {
    let cluster = labels(&[("env", "prod")]);
    for (selector, expected) in [
        ("region!=eu", true),
        ("region notin (eu,us)", true),
        ("!region", true),
        ("region=eu", false),
        ("region in (eu,us)", false),
        ("region", false),
        ("region=", false),
        ("region in (,)", false),
        ("region!=", true),
    ] {
        assert_eq!(parse(selector).matches(&cluster), expected, "{selector}");
    }
}

#[test]
fn whitespace_around_tokens_is_ignored() {
    let compact = parse("env=prod,region in (eu,us),!tpu,gpu");
    for spaced in [
        "  env = prod ,region   in ( eu , us ) , ! tpu , gpu  ",
        "env==prod,\tregion in(eu,us),\n!tpu,\r\ngpu",
    ] {
        assert_eq!(parse(spaced), compact, "{spaced:?}");
    }
    for blank in ["", " ", " \t\r\n "] {
        assert!(parse(blank).is_everything(), "{blank:?}");
    }
    assert!(!compact.is_everything());
    assert_eq!(Selector::everything(), Selector::default());
    assert!(Selector::everything().matches(&Labels::new()));
}

#[test]
fn empty_places_in_a_value_list_are_the_empty_value() {
    assert_eq!(parse("a in (x,)"), parse("a in (,x)"));
    assert_eq!(parse("a in (x,,y)"), parse("a in (,x,y)"));
    assert!(parse("a in (,)").matches(&labels(&[("a", "")])));
    assert!(!parse("a in (,)").matches(&labels(&[("a", "x")])));
    assert_eq!(parse("a in (,)").to_string(), "a in (,)");
    assert_eq!(parse("a notin (x,)").to_string(), "a notin (,x)");
    let err = parse_err("a in ()");
    assert_eq!(err.position, 6);
    assert!(err.reason.contains("empty value list"), "{err}");
}

#[test]
fn errors_point_at_where_parsing_failed() {
    for (text, position, reason) in [
        (
            "env in prod",
            7,
            "expected \"(\" after \"in\", found \"prod\"",
        ),
        (
            "env notin",
            9,
            "expected \"(\" after \"notin\", found the end of the selector",
        ),
        (
            "env in (eu,us",
            13,
            "unterminated value list: the \"(\" at character 7",
        ),
        ("env in (", 8, "unterminated value list"),
        ("a b=c", 0, "\"a b\" is not a valid label key"),
        ("a=b c", 2, "\"b c\" is not a valid label value"),
        ("a in (b c)", 6, "\"b c\" is not a valid label value"),
        (
            "env=prod,",
            9,
            "expected a label key or \"!\", found the end of the selector",
        ),
        (",env", 0, "expected a label key or \"!\", found \",\""),
        ("a,,b", 2, "expected a label key or \"!\", found \",\""),
        ("!a=b", 2, "\"!a\" selects clusters without the key"),
        ("!", 1, "expected a label key after \"!\""),
        ("a>1", 1, "\">\" is not supported"),
        ("a < 1", 2, "\"<\" is not supported"),
        (
            "a=b=c",
            3,
            "expected \",\" or the end of the selector after \"a=b\", found \"=\"",
        ),
        ("a in (b))", 8, "after \"a in (b)\", found \")\""),
        (
            "a in (b=c)",
            7,
            "expected \",\" or \")\" in the value list, found \"=\"",
        ),
        ("a in (=)", 6, "expected a value, \",\" or \")\""),
        ("a=(b)", 2, "expected a value after \"=\", found \"(\""),
        ("a(", 1, "after label key \"a\", found \"(\""),
        (
            "Env/x=1",
            0,
            "\"Env/x\" is not a valid label key: the prefix",
        ),
        (
            "env=-prod",
            4,
            "\"-prod\" is not a valid label value: must start",
        ),
        ("env in (eu,-us)", 11, "\"-us\" is not a valid label value"),
    ] {
        let err = parse_err(text);
        assert_eq!(err.position, position, "{text:?}: {err}");
        assert!(err.reason.contains(reason), "{text:?}: {err}");
        assert_eq!(
            err.to_string(),
            format!("{} (at character {position})", err.reason)
        );
    }
}

#[test]
fn positions_count_characters_not_bytes() {
    // 2049 two-byte characters: the one at index 2048 is the first past 4096 bytes.
    let err = parse_err(&"é".repeat(2049));
    assert_eq!(err.position, 2048, "{err}");
    assert!(err.reason.contains("at most 4096"), "{err}");
}

#[test]
fn long_keys_are_quoted_only_in_part() {
    let err = parse_err(&format!("{}=x", "k".repeat(1000)));
    assert_eq!(err.position, 0);
    assert!(err.reason.contains('…') && err.reason.len() < 200, "{err}");
}

#[test]
fn the_limits_are_enforced_with_a_clear_error() {
    let at_limit: Vec<String> = (0..MAX_REQUIREMENTS).map(|i| format!("k{i}")).collect();
    assert_eq!(
        parse(&at_limit.join(",")).requirements.len(),
        MAX_REQUIREMENTS
    );
    let over = format!("{},k64", at_limit.join(","));
    let err = parse_err(&over);
    assert_eq!(err.position, over.len() - 3);
    assert!(err.reason.contains("at most 64"), "{err}");

    let long_value = format!("k={}", "v".repeat(61));
    let exactly = format!("{long_value},{}", "k".repeat(MAX_SELECTOR_BYTES - 64));
    assert_eq!(exactly.len(), MAX_SELECTOR_BYTES);
    let err = parse_err(&format!("{exactly}k"));
    assert!(
        err.reason.contains("4097 bytes") && err.reason.contains("at most 4096"),
        "{err}"
    );
    assert_eq!(err.position, MAX_SELECTOR_BYTES);
    // Within the limit, the long key fails on its own rules instead.
    assert!(parse_err(&exactly).reason.contains("63 characters or less"));

    // 64 requirements of 63 bytes each fit as written, but not once printed with a space
    // before each "(": refused, so that no accepted selector fails to parse back.
    let dense: Vec<String> = (0..64)
        .map(|i| format!("k{i:02} in({})", "v".repeat(55)))
        .collect();
    let dense = dense.join(",");
    assert!(dense.len() <= MAX_SELECTOR_BYTES);
    let err = parse_err(&dense);
    assert!(err.reason.contains("canonically"), "{err}");
}

#[test]
fn display_is_canonical_and_parses_back() {
    for (text, canonical) in [
        ("region in (us,eu), env==prod", "env=prod,region in (eu,us)"),
        ("b,a,!c", "a,b,!c"),
        ("a,a,a", "a"),
        ("x notin (b,a,b)", "x notin (a,b)"),
        ("a=,b!=", "a=,b!="),
        (
            "in in (in,notin),notin=in,!in",
            "!in,in in (in,notin),notin=in",
        ),
        ("example.com/tier!=web", "example.com/tier!=web"),
        ("", ""),
    ] {
        let selector = parse(text);
        assert_eq!(selector.to_string(), canonical, "{text:?}");
        assert_eq!(parse(canonical), selector, "{canonical:?}");
        assert_eq!(canonical.parse::<Selector>(), Ok(selector));
    }
}

#[test]
fn serde_uses_the_canonical_text() {
    let selector = parse("region in (us,eu),env=prod");
    let json = serde_json::to_string(&selector).unwrap();
    assert_eq!(json, r#""env=prod,region in (eu,us)""#);
    assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), selector);
    assert_eq!(
        serde_json::to_string(&Selector::everything()).unwrap(),
        r#""""#
    );
    assert!(
        serde_json::from_str::<Selector>(r#""""#)
            .unwrap()
            .is_everything()
    );
    let err = serde_json::from_str::<Selector>(r#""env in prod""#).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid label selector: expected \"(\" after \"in\""),
        "{err}"
    );
    assert!(serde_json::from_str::<Selector>("3").is_err());
}

fn key() -> impl Strategy<Value = String> {
    let name = "[A-Za-z0-9]([A-Za-z0-9_.-]{0,6}[A-Za-z0-9])?";
    let prefix = "[a-z0-9]([a-z0-9-]{0,3}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,3}[a-z0-9])?){0,2}";
    prop_oneof![
        name.prop_map(String::from),
        (prefix, name).prop_map(|(p, n)| format!("{p}/{n}")),
        Just("in".to_string()),
        Just("notin".to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "(([A-Za-z0-9][A-Za-z0-9_.-]{0,6})?[A-Za-z0-9])?".prop_map(String::from),
        Just(String::new()),
        Just("in".to_string()),
    ]
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let values = || proptest::collection::btree_set(value(), 1..4);
    let op = prop_oneof![
        Just(Op::Exists),
        Just(Op::DoesNotExist),
        value().prop_map(Op::Equals),
        value().prop_map(Op::NotEquals),
        values().prop_map(Op::In),
        values().prop_map(Op::NotIn),
    ];
    (key(), op).prop_map(|(key, op)| Requirement { key, op })
}

fn selector() -> impl Strategy<Value = Selector> {
    proptest::collection::vec(requirement(), 0..8).prop_map(Selector::from_requirements)
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Selector::parse(&text);
    }

    #[test]
    fn selector_like_text_never_panics_and_what_parses_prints_back(
        text in "[a-c/.=!(), \tinot<>é-]{0,40}",
    ) {
        if let Ok(selector) = Selector::parse(&text) {
            prop_assert_eq!(Selector::parse(&selector.to_string()), Ok(selector));
        }
    }

    #[test]
    fn generated_selectors_print_and_parse_back(selector in selector()) {
        for r in &selector.requirements {
            prop_assert_eq!(key_problem(&r.key), None);
        }
        let text = selector.to_string();
        prop_assert_eq!(Selector::parse(&text), Ok(selector.clone()));
        let json = serde_json::to_string(&selector).unwrap();
        prop_assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), selector);
    }
}

#[test]
fn labels_keep_key_order_and_serialise_as_an_object() {
    let mut labels: Labels = [
        ("region".to_owned(), "eu".to_owned()),
        ("env".to_owned(), "dev".to_owned()),
        ("env".to_owned(), "prod".to_owned()),
    ]
    .into();
    assert_eq!(labels.len(), 2, "a key given twice keeps its last value");
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(labels.insert("app".into(), "web".into()), None);
    assert_eq!(
        labels.insert("env".into(), "test".into()).as_deref(),
        Some("prod")
    );
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["app", "env", "region"]);
    assert_eq!(labels.remove("region").as_deref(), Some("eu"));
    assert_eq!(labels.remove("region"), None);
    assert!(!labels.contains_key("region"));

    let json = serde_json::to_string(&labels).unwrap();
    assert_eq!(json, r#"{"app":"web","env":"test"}"#);
    let back: Labels = serde_json::from_str(r#"{"env":"test","app":"web"}"#).unwrap();
    assert_eq!(back, labels);
    assert!(serde_json::from_str::<Labels>(r#"{"a":1}"#).is_err());
}
