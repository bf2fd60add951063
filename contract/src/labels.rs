//! Cluster labels, and the label selectors pipelines pick clusters with
//! (`env=prod,region in (eu,us)`).
//!
//! Both follow the Kubernetes API (apimachinery's `labels` and `validation` packages), so
//! what a pipeline author knows from `kubectl get -l` carries over unchanged, and a
//! selector that works here means the same thing there:
//!
//! - a label key is an optional DNS subdomain prefix and `/`, then a name of at most 63
//!   letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit; a value
//!   is empty or follows the rules of a name ([`key_problem`], [`value_problem`]);
//! - a selector is comma-separated requirements, all of which must hold: `key=value`
//!   (`==` is the same), `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (the key is
//!   present) and `!key` (it is absent). `!=` and `notin` also hold when the key is absent;
//!   whitespace around tokens is ignored, and an empty selector selects every cluster.
//!
//! Where apimachinery's behaviour is surprising or unsuited to a registry, this module
//! chooses as follows:
//!
//! - an empty place in a value list is the empty value, as in apimachinery: `in (a,)` and
//!   `in (,a)` mean `a` or empty, `in (,)` means empty; but `in ()` is refused, because it
//!   reads as "no value at all" while apimachinery takes it to mean the empty value;
//! - apimachinery's integer comparisons (`key>1`, `key<1`) are refused with an error that
//!   says so: the documented selector syntax has no such operators, and a cluster's labels
//!   are names, not numbers;
//! - requirements are kept sorted (by key, as apimachinery prints them), with exact
//!   duplicates dropped, and `==` prints as `=`: two selectors that ask for the same thing
//!   written differently are equal and print the same;
//! - a selector is at most [`MAX_SELECTOR_BYTES`] long (as written and in its canonical
//!   form, so a recorded selector always parses back) and has at most
//!   [`MAX_REQUIREMENTS`] requirements: a pipeline never needs more, and the registry
//!   evaluates selectors against every cluster.
//!
//! Parsing never panics, takes time linear in the input, and reports the character (not
//! byte) where it failed, with a reason meant for the pipeline author who wrote it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::FieldError;

/// A cluster's labels, key to value. Sorted, so labels print and serialise in one order
/// (as a JSON object). Kept as a sorted list: a registry of 10,000 clusters holds one in
/// memory for each, and a cluster has a handful of labels, where a map's smallest node
/// holds eleven.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`; the value it had.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; the value it had.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for Labels {
    /// The last value given for a key wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let map: BTreeMap<String, String> = iter.into_iter().collect();
        Self(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(Self::from)
    }
}

/// The longest selector accepted, in bytes: far more than a pipeline needs, small enough
/// that evaluating it against every cluster in the registry stays cheap.
pub const MAX_SELECTOR_BYTES: usize = 4096;

/// The most requirements one selector may have.
pub const MAX_REQUIREMENTS: usize = 64;

/// The longest label name (the part after any prefix) or value, in characters.
const NAME_MAX: usize = 63;

/// The longest key prefix: a DNS subdomain.
const PREFIX_MAX: usize = 253;

/// How much of a rejected key, value or token an error message quotes.
const QUOTE_MAX: usize = 64;

/// Checks every label, returning one [`FieldError`] per bad label: `labels.<key>` for a bad
/// value, `labels` (naming the key in the reason) when the key itself is bad, since a bad
/// key makes a poor field name.
pub fn check_labels(labels: &Labels) -> Vec<FieldError> {
    labels
        .iter()
        .filter_map(|(key, value)| {
            if let Some(reason) = key_problem(key) {
                let reason = format!("{} is not a valid label key: {reason}", quote(key));
                Some(FieldError::new("labels", reason))
            } else {
                value_problem(value).map(|reason| {
                    let reason = format!("{} is not a valid label value: {reason}", quote(value));
                    FieldError::new(format!("labels.{key}"), reason)
                })
            }
        })
        .collect()
}

/// Returns which rule `key` breaks as a label key, or `None` if it is a valid one.
///
/// The reason does not repeat the key, so callers can quote it as they see fit.
pub fn key_problem(key: &str) -> Option<String> {
    let Some((prefix, name)) = key.split_once('/') else {
        return name_problem(key).map(String::from);
    };
    if name.contains('/') {
        return Some(
            "must contain at most one \"/\": an optional DNS subdomain prefix, \"/\", then a \
             name (e.g. \"example.com/tier\")"
                .into(),
        );
    }
    if let Some(problem) = prefix_problem(prefix) {
        return Some(format!("the prefix (before \"/\") {problem}"));
    }
    name_problem(name).map(|problem| format!("the name (after \"/\") {problem}"))
}

/// Returns which rule `value` breaks as a label value, or `None` if it is a valid one.
/// The empty value is valid.
pub fn value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    name_problem(value).map(String::from)
}

/// The rules of a label name, which a non-empty value follows too.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.chars().nth(NAME_MAX).is_some() {
        return Some("must be 63 characters or less");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("must consist of ASCII letters, digits, '-', '_' and '.'");
    }
    if !starts_and_ends_alphanumeric(name) {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// The rules of a key prefix: an RFC 1123 DNS subdomain, as Kubernetes checks it.
fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        return Some("must not be empty");
    }
    if prefix.chars().nth(PREFIX_MAX).is_some() {
        return Some("must be 253 characters or less");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
    {
        return Some("must be a DNS subdomain: lowercase letters, digits, '-' and '.'");
    }
    if !prefix.split('.').all(starts_and_ends_alphanumeric) {
        return Some(
            "must be a DNS subdomain: each part between dots must start and end with a \
             letter or digit",
        );
    }
    None
}

fn starts_and_ends_alphanumeric(s: &str) -> bool {
    let alphanumeric = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    alphanumeric(s.as_bytes().first()) && alphanumeric(s.as_bytes().last())
}

/// `s` in double quotes with escapes, cut after [`QUOTE_MAX`] characters so an error about
/// a huge input stays readable.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}", format!("{}…", &s[..cut])),
    }
}

/// A label selector: requirements that must all hold for a cluster's labels to match.
///
/// Built by [`Selector::parse`] (or [`Selector::everything`]); prints in a canonical form
/// that parses back to an equal selector, and serialises as that text, so a recorded
/// selector reads as a pipeline would write it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    /// Sorted, without duplicates, so equal selectors compare and print equal.
    requirements: Vec<Requirement>,
}

/// One requirement on one key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Requirement {
    key: String,
    op: Op,
}

/// What a requirement asks of its key. `=` and `==` are both `Equals`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    /// Never empty: the parser refuses `()`.
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
}

/// Why a selector does not parse, and the character (0-based) where parsing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at character {position})")]
pub struct SelectorError {
    /// Counted in characters from 0, so an editor or a caret under the text finds it.
    pub position: usize,
    /// What was wrong and, where it helps, what was expected instead.
    pub reason: String,
}

impl SelectorError {
    fn new(position: usize, reason: impl Into<String>) -> Self {
        Self {
            position,
            reason: reason.into(),
        }
    }
}

impl Selector {
    /// Parses a selector such as `env=prod,region in (eu,us),!deprecated`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.len() > MAX_SELECTOR_BYTES {
            let position = text
                .char_indices()
                .position(|(at, c)| at + c.len_utf8() > MAX_SELECTOR_BYTES)
                .unwrap_or(0);
            return Err(SelectorError::new(
                position,
                format!(
                    "selector is {} bytes long; at most {MAX_SELECTOR_BYTES} are allowed",
                    text.len()
                ),
            ));
        }
        let selector = parse::Parser::new(text).selector()?;
        // The canonical form can be a little longer than the text (`a in(b)` prints as
        // `a in (b)`); refusing it here keeps every accepted selector parseable once printed.
        let canonical = selector.to_string().len();
        if canonical > MAX_SELECTOR_BYTES {
            return Err(SelectorError::new(
                text.chars().count(),
                format!(
                    "selector is {canonical} bytes long once written canonically (with a space \
                     before each \"(\"); at most {MAX_SELECTOR_BYTES} are allowed"
                ),
            ));
        }
        Ok(selector)
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The empty selector, which matches every cluster.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Whether this selector matches every cluster (it has no requirements).
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Equals(wanted) => value == Some(wanted),
            Op::NotEquals(unwanted) => value != Some(unwanted),
            Op::In(values) => value.is_some_and(|v| values.contains(v)),
            Op::NotIn(values) => !value.is_some_and(|v| values.contains(v)),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.op {
            Op::Exists => f.write_str(key),
            Op::DoesNotExist => write!(f, "!{key}"),
            Op::Equals(value) => write!(f, "{key}={value}"),
            Op::NotEquals(value) => write!(f, "{key}!={value}"),
            Op::In(values) => write!(f, "{key} in ({})", List(values)),
            Op::NotIn(values) => write!(f, "{key} notin ({})", List(values)),
        }
    }
}

/// A value list between its parentheses. The list holding only the empty value prints as
/// `,` (one empty place either side), since `()` does not parse.
struct List<'a>(&'a BTreeSet<String>);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() == 1 && self.0.contains("") {
            return f.write_str(",");
        }
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(value)?;
        }
        Ok(())
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Selector::parse(&text)
            .map_err(|e| serde::de::Error::custom(format_args!("invalid label selector: {e}")))
    }
}

mod parse;

#[cfg(test)]
mod tests;
