//! Secrets read from a file or an environment variable, never written into configuration
//! files, and hidden by `Debug` and `Display`.

use std::{fmt, path::Path};

/// A secret value. `Debug` and `Display` print `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests, and values read by [`read`]).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads the secret configured as `<key>_file` (a path) or `<key>_env` (the name of an
/// environment variable); exactly one must be given. Surrounding whitespace (a file's
/// trailing newline) is trimmed. Errors name the key, never the value.
pub fn read(key: &str, file: Option<&Path>, env: Option<&str>) -> Result<Secret, String> {
    let value = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(format!("{key}_file and {key}_env: give one, not both"));
        }
        (None, None) => return Err(format!("{key}_file or {key}_env: one is required")),
        (Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| format!("{key}_file: cannot read {}: {e}", path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| format!("{key}_env: environment variable {var} is not set"))?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{key}: the secret is empty"));
    }
    Ok(Secret(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reads_a_file_trimmed_and_names_the_key_on_errors() {
        let dir = tempdir();
        let path = dir.join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read("t", Some(&path), None).unwrap().expose(), "s3cret");
        let err = read("tokens.ci.secret", None, None).unwrap_err();
        assert!(err.starts_with("tokens.ci.secret_file or"), "{err}");
        let err = read("t", None, Some("LONGSHORE_TEST_UNSET_VAR_4711")).unwrap_err();
        assert!(err.contains("t_env"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("longshore-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
