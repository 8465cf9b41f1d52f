//! How a network crate reads its configuration section, and the secrets
//! in it.
//!
//! Every secret key comes in three forms (`token`, `token_env`,
//! `token_file`); the hub resolves them one way for all networks, so a
//! network crate's config validation asks through [`Secrets`] instead of
//! reading the environment or files itself.

/// Resolves a secret key's three forms.
pub trait Secrets {
    /// The secret set by exactly one of `<key>` (`inline`), `<key>_env`
    /// (`env`) or `<key>_file` (`file`, relative to the configuration
    /// file); `Ok(None)` when none is set.
    ///
    /// # Errors
    /// The key at fault (`<key>_env`, ...) and what is wrong with it.
    fn resolve(
        &self,
        key: &str,
        inline: Option<&str>,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Option<String>, (String, String)>;
}

/// A section's problems, as (key under the section, message).
pub type Problems = Vec<(String, String)>;

/// Reads a network's raw section (`[telegram.<name>]`, ...) into its raw
/// struct; a wrong type or an unknown key comes back as one problem naming
/// the key (empty for the section itself).
///
/// # Errors
/// The first key that does not fit.
pub fn read_section<T: serde::de::DeserializeOwned>(section: &toml::Value) -> Result<T, Problems> {
    serde_path_to_error::deserialize(section.clone()).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { String::new() } else { path };
        vec![(key, e.into_inner().to_string())]
    })
}
