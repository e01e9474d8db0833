//! Cluster tokens. A cluster secret `C` (32 random bytes) yields:
//! - the mesh secret `sha256("shoal/token/mesh" || C)`, shared by every member: the mesh turns it
//!   into the libp2p pre-shared key, so a peer without a token cannot even connect;
//! - the worker secret `sha256("shoal/token/worker" || C)`.
//!
//! A manager token is `SHOAL1-<mesh hex>-M<C hex>`; a worker token is
//! `SHOAL1-<mesh hex>-W<worker hex>`. A manager (it knows `C`) checks both kinds; a worker token
//! cannot be turned into a manager token because the hash cannot be inverted.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::ConsensusError;

const PREFIX: &str = "SHOAL1";
const MESH_DOMAIN: &[u8] = b"shoal/token/mesh\0";
const WORKER_DOMAIN: &[u8] = b"shoal/token/worker\0";

/// What a presented token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    /// May become a manager.
    Manager,
    /// May only run tasks.
    Worker,
}

/// A parsed token. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    mesh: [u8; 32],
    role: TokenRole,
    secret: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn digest(domain: &[u8], secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(secret);
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Compares in constant time (the length is public).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Token {
    /// Generates a new cluster secret and returns its manager token.
    pub fn generate_manager() -> Result<Token, ConsensusError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| ConsensusError::Token(e.to_string()))?;
        Ok(Token {
            mesh: digest(MESH_DOMAIN, &secret),
            role: TokenRole::Manager,
            secret,
        })
    }

    /// Parses a token string.
    pub fn parse(s: &str) -> Result<Token, ConsensusError> {
        let bad =
            || ConsensusError::Token("expected SHOAL1-<64 hex>-M<64 hex> or -W<64 hex>".into());
        let mut parts = s.trim().split('-');
        let (Some(prefix), Some(mesh), Some(rest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if prefix != PREFIX {
            return Err(bad());
        }
        let mesh = unhex32(mesh).ok_or_else(bad)?;
        let role = match rest.as_bytes().first() {
            Some(b'M') => TokenRole::Manager,
            Some(b'W') => TokenRole::Worker,
            _ => return Err(bad()),
        };
        let secret = unhex32(&rest[1..]).ok_or_else(bad)?;
        if role == TokenRole::Manager && !same(&digest(MESH_DOMAIN, &secret), &mesh) {
            return Err(ConsensusError::Token(
                "manager token does not match its mesh secret".into(),
            ));
        }
        Ok(Token { mesh, role, secret })
    }

    /// The role this token grants.
    pub fn role(&self) -> TokenRole {
        self.role
    }

    /// The secret to give the mesh (`MeshConfig::token`): the same for both roles of a cluster.
    pub fn mesh_secret(&self) -> String {
        hex(&self.mesh)
    }

    /// The manager token string (only from a manager token).
    pub fn manager_token(&self) -> Option<String> {
        (self.role == TokenRole::Manager)
            .then(|| format!("{PREFIX}-{}-M{}", hex(&self.mesh), hex(&self.secret)))
    }

    /// The worker token string.
    pub fn worker_token(&self) -> String {
        let worker = match self.role {
            TokenRole::Manager => digest(WORKER_DOMAIN, &self.secret),
            TokenRole::Worker => self.secret,
        };
        format!("{PREFIX}-{}-W{}", hex(&self.mesh), hex(&worker))
    }

    /// Checks a token presented by a joiner against this (manager) token. `None`: refused.
    pub fn verify(&self, presented: &Token) -> Option<TokenRole> {
        if self.role != TokenRole::Manager || !same(&self.mesh, &presented.mesh) {
            return None;
        }
        match presented.role {
            TokenRole::Manager => {
                same(&self.secret, &presented.secret).then_some(TokenRole::Manager)
            }
            TokenRole::Worker => same(&digest(WORKER_DOMAIN, &self.secret), &presented.secret)
                .then_some(TokenRole::Worker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_verify() -> Result<(), ConsensusError> {
        let m = Token::generate_manager()?;
        let ms = m
            .manager_token()
            .ok_or_else(|| ConsensusError::Token("no manager token".into()))?;
        let w = Token::parse(&m.worker_token())?;
        assert_eq!(Token::parse(&ms)?, m);
        assert_eq!(w.mesh_secret(), m.mesh_secret());
        assert_eq!(m.verify(&Token::parse(&ms)?), Some(TokenRole::Manager));
        assert_eq!(m.verify(&w), Some(TokenRole::Worker));
        assert_eq!(w.verify(&w), None, "a worker token verifies nothing");
        assert_eq!(w.manager_token(), None);
        let other = Token::generate_manager()?;
        assert_eq!(m.verify(&other), None);
        assert_eq!(m.verify(&Token::parse(&other.worker_token())?), None);
        assert!(!format!("{m:?}").contains(&m.mesh_secret()));
        Ok(())
    }

    #[test]
    fn garbage_is_refused() {
        for s in [
            "",
            "SHOAL1",
            "SHOAL1-zz-Mzz",
            "SHOAL2-00-M00",
            "SHOAL1-a-b-c-d",
        ] {
            assert!(Token::parse(s).is_err(), "{s}");
        }
    }
}
