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
pub fn load<T>(file: Option<&Path>, env_prefix: &str, list_keys: &[&str]) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
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
        .try_parsing(true);
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
