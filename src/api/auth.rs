//! Bearer tokens: lookup, scopes and gateway checks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use switchboard_core::{AccountId, GatewayName};

use super::error::ApiError;
use crate::config::ApiToken;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its account.
    pub account: AccountId,
    /// Its token's settings.
    pub token: Arc<ApiToken>,
}

impl Caller {
    /// `<account>/<token name>`: the consumer identity stored with cursors
    /// and posted events.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.account, self.token.name)
    }

    /// Requires the read scope and access to `gw`.
    ///
    /// # Errors
    /// 403 when the token may not read `gw`.
    pub fn can_read(&self, gw: &GatewayName) -> Result<(), ApiError> {
        if !self.token.scopes.read {
            return Err(ApiError::Forbidden(format!(
                "token `{}` lacks the read scope",
                self.token.name
            )));
        }
        self.gateway(gw)
    }

    /// Requires the write scope and access to `gw`.
    ///
    /// # Errors
    /// 403 when the token may not write to `gw`.
    pub fn can_write(&self, gw: &GatewayName) -> Result<(), ApiError> {
        if !self.token.scopes.write {
            return Err(ApiError::Forbidden(format!(
                "token `{}` lacks the write scope",
                self.token.name
            )));
        }
        self.gateway(gw)
    }

    fn gateway(&self, gw: &GatewayName) -> Result<(), ApiError> {
        if self.token.allows(gw) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "token `{}` may not use gateway `{gw}`",
                self.token.name
            )))
        }
    }
}

/// The tokens of one API account, keyed by the SHA-256 of the secret so
/// the lookup does not compare secrets byte by byte. Replaced whole on a
/// reload.
pub struct Tokens {
    account: AccountId,
    /// A std lock held only for a lookup or a swap.
    by_hash: std::sync::RwLock<HashMap<[u8; 32], Arc<ApiToken>>>,
}

impl Tokens {
    /// Indexes an account's tokens.
    #[must_use]
    pub fn new(account: AccountId, tokens: &[ApiToken]) -> Self {
        Self {
            account,
            by_hash: std::sync::RwLock::new(index(tokens)),
        }
    }

    /// Puts a reloaded configuration's tokens in force.
    pub fn replace(&self, tokens: &[ApiToken]) {
        *self.by_hash.write().expect("tokens lock") = index(tokens);
    }

    /// Authenticates a request by its `Authorization: Bearer` header.
    ///
    /// # Errors
    /// 401 when the header is missing or the token unknown.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::Unauthorized("missing `Authorization: Bearer <token>`".into())
            })?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into())
            })?;
        self.by_hash
            .read()
            .expect("tokens lock")
            .get(&hash(secret.trim()))
            .map(|t| Caller {
                account: self.account.clone(),
                token: t.clone(),
            })
            .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))
    }
}

fn index(tokens: &[ApiToken]) -> HashMap<[u8; 32], Arc<ApiToken>> {
    tokens
        .iter()
        .map(|t| (hash(t.secret.expose()), Arc::new(t.clone())))
        .collect()
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
