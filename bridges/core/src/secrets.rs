//! How a network crate reads a secret in its configuration section.
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
