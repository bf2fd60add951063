//! Loading a binary's typed configuration: built-in defaults < file < environment.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

/// Why configuration could not be loaded. The message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Loads `T` from its defaults, then `file` (TOML) if given, then environment variables
/// `<PREFIX>_<SECTION>__<KEY>` (e.g. `LONGSHORE_NATS__URL`). Keys listed in `list_keys`
/// may be given in the environment as comma-separated lists.
///
/// Only variables whose first key names a top-level setting of `T` are read: the prefix is
/// shared with variables that are not configuration (`LONGSHORE_LOG`, `LONGSHORE_CONFIG`,
/// the CLI's `LONGSHORE_SERVER`), which must not be mistaken for unknown keys.
pub fn load<T>(file: Option<&Path>, env_prefix: &str, list_keys: &[&str]) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    load_from(file, env_prefix, list_keys, std::env::vars())
}

/// [`load`] with the environment given explicitly.
pub fn load_from<T>(
    file: Option<&Path>,
    env_prefix: &str,
    list_keys: &[&str],
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let known: Vec<String> = serde_json::to_value(T::default())
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default();
    let prefix = format!("{env_prefix}_");
    let vars: config::Map<String, String> = vars
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix(&prefix).is_some_and(|rest| {
                let first = rest
                    .split("__")
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                known.contains(&first)
            })
        })
        .collect();
    let defaults =
        config::Config::try_from(&T::default()).map_err(|e| ConfigError(e.to_string()))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let mut env = config::Environment::with_prefix(env_prefix)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars));
    if !list_keys.is_empty() {
        env = env.list_separator(",");
        for key in list_keys {
            env = env.with_list_parse_key(key);
        }
    }
    builder
        .add_source(env)
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| ConfigError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        listen: String,
        clusters: Vec<String>,
        http: Http,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Http {
        body_limit: u64,
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_and_lists_split() {
        let s: Sample = load_from(
            None,
            "LONGSHORE",
            &["clusters"],
            vars(&[
                ("LONGSHORE_LISTEN", "127.0.0.1:1"),
                ("LONGSHORE_CLUSTERS", "a,b"),
                ("LONGSHORE_HTTP__BODY_LIMIT", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen, "127.0.0.1:1");
        assert_eq!(s.clusters, ["a", "b"]);
        assert_eq!(s.http.body_limit, 7);
    }

    #[test]
    fn variables_that_are_not_settings_are_left_alone_but_typos_in_sections_are_named() {
        let s: Sample = load_from(
            None,
            "LONGSHORE",
            &[],
            vars(&[("LONGSHORE_LOG", "debug"), ("LONGSHORE_CONFIG", "/x")]),
        )
        .unwrap();
        assert_eq!(s, Sample::default());
        let err = load_from::<Sample>(
            None,
            "LONGSHORE",
            &[],
            vars(&[("LONGSHORE_HTTP__BODY_LIMT", "7")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("body_limt"), "{err}");
    }
}
