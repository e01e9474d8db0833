//! Cluster tokens. A cluster secret `C` (32 random bytes) yields:
//! - the mesh secret `sha256("shoal/token/mesh" || C)`, shared by every member: the mesh turns it
//!   into the libp2p pre-shared key, so a peer without a token cannot even connect;
//! - the worker secret `sha256("shoal/token/worker" || C)`;
//! - the raft key `sha256("shoal/token/raft" || C)` ([`RaftKey`]), known only to manager tokens:
//!   every raft RPC of a closed cluster carries `HMAC-SHA256(raft key, sender || receiver)`, so
//!   an agent holding a worker token cannot complete a raft exchange.
//!
//! A manager token is `SHOAL1-<mesh hex>-M<C hex>`; a worker token is
//! `SHOAL1-<mesh hex>-W<worker hex>`. A manager (it knows `C`) checks both kinds; a worker token
//! cannot be turned into a manager token because the hash cannot be inverted.
//!
//! Join tokens rotate (`shoal cluster token --rotate`) without re-keying the mesh or raft: a
//! rotation is a nonce `N` in the managers' replicated state ([`JoinKeys`]). After it, the worker
//! token's secret is `sha256("shoal/token/worker-rotated" || C || N)`, and the manager token
//! carries a join proof `-J<sha256("shoal/token/manager-join" || C || N)>` after `C`. Only
//! a holder of `C` can derive either, and an old manager token (which holds `C`) cannot derive the
//! new proof without `N`, which only the managers keep.

use std::fmt;

use sha2::{Digest, Sha256};

use shoal_scheduler::Timestamp;
use shoal_scheduler::join_keys::{JoinKeys, JoinNonce, JoinRole};

use crate::error::ConsensusError;

const PREFIX: &str = "SHOAL1";
const MESH_DOMAIN: &[u8] = b"shoal/token/mesh\0";
const WORKER_DOMAIN: &[u8] = b"shoal/token/worker\0";
const RAFT_DOMAIN: &[u8] = b"shoal/token/raft\0";
const PROOF_DOMAIN: &[u8] = b"shoal/raft-proof/v1\0";
const FINGERPRINT_DOMAIN: &[u8] = b"shoal/token/fingerprint\0";
const WORKER_ROTATED_DOMAIN: &[u8] = b"shoal/token/worker-rotated\0";
const MANAGER_JOIN_DOMAIN: &[u8] = b"shoal/token/manager-join\0";

/// What a presented token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    /// May become a manager.
    Manager,
    /// May only run tasks.
    Worker,
}

/// Why an agent cannot show the cluster's join tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoJoinToken {
    /// The cluster runs without a token.
    #[error(
        "this cluster is open (no token): any agent on the LAN may join. To close it, create a \
         secret with `shoal cluster token --new` and restart every agent with SHOAL_TOKEN"
    )]
    OpenCluster,
    /// This agent holds a worker token, from which no token can be derived.
    #[error("this agent joined with a worker token; run `shoal cluster token` on a manager")]
    WorkerToken,
}

/// A new random join-token rotation.
pub fn new_join_nonce() -> Result<JoinNonce, ConsensusError> {
    let mut nonce = [0u8; 32];
    getrandom::getrandom(&mut nonce).map_err(|e| ConsensusError::Token(e.to_string()))?;
    Ok(JoinNonce(nonce))
}

/// A parsed token. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    mesh: [u8; 32],
    role: TokenRole,
    secret: [u8; 32],
    /// A manager token's join proof for a rotation (`-J…`); `None` for the original token.
    join: Option<[u8; 32]>,
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

fn digest_with(domain: &[u8], secret: &[u8; 32], nonce: &JoinNonce) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(secret);
    h.update(nonce.0);
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
            join: None,
        })
    }

    /// Parses a token string.
    pub fn parse(s: &str) -> Result<Token, ConsensusError> {
        let bad =
            || ConsensusError::Token("expected SHOAL1-<64 hex>-M<64 hex> or -W<64 hex>".into());
        let mut parts = s.trim().split('-');
        let (Some(prefix), Some(mesh), Some(rest), join, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
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
        let join = match join {
            None => None,
            Some(proof) if role == TokenRole::Manager => {
                Some(unhex32(proof.strip_prefix('J').ok_or_else(bad)?).ok_or_else(bad)?)
            }
            Some(_) => return Err(bad()),
        };
        Ok(Token {
            mesh,
            role,
            secret,
            join,
        })
    }

    /// The role this token grants.
    pub fn role(&self) -> TokenRole {
        self.role
    }

    /// A short public name of the cluster's secret (the same for the manager and the worker
    /// token): two agents whose fingerprints differ cannot connect. Reveals nothing of the secret.
    pub fn fingerprint(&self) -> String {
        hex(&digest(FINGERPRINT_DOMAIN, &self.mesh)[..6])
    }

    /// The secret to give the mesh (`MeshConfig::token`): the same for both roles of a cluster.
    pub fn mesh_secret(&self) -> String {
        hex(&self.mesh)
    }

    /// The manager token string (only from a manager token), as this token was given.
    pub fn manager_token(&self) -> Option<String> {
        (self.role == TokenRole::Manager).then(|| {
            let base = format!("{PREFIX}-{}-M{}", hex(&self.mesh), hex(&self.secret));
            match &self.join {
                Some(proof) => format!("{base}-J{}", hex(proof)),
                None => base,
            }
        })
    }

    /// The join token of `role` for the rotation `nonce` (`None`: the original token). Only a
    /// manager token can derive them.
    pub fn join_token(&self, role: JoinRole, nonce: Option<&JoinNonce>) -> Option<String> {
        if self.role != TokenRole::Manager {
            return None;
        }
        let mesh = hex(&self.mesh);
        Some(match (role, nonce) {
            (JoinRole::Worker, None) => self.worker_token(),
            (JoinRole::Worker, Some(nonce)) => format!(
                "{PREFIX}-{mesh}-W{}",
                hex(&digest_with(WORKER_ROTATED_DOMAIN, &self.secret, nonce))
            ),
            (JoinRole::Manager, None) => format!("{PREFIX}-{mesh}-M{}", hex(&self.secret)),
            (JoinRole::Manager, Some(nonce)) => format!(
                "{PREFIX}-{mesh}-M{}-J{}",
                hex(&self.secret),
                hex(&digest_with(MANAGER_JOIN_DOMAIN, &self.secret, nonce))
            ),
        })
    }

    /// The worker token string.
    pub fn worker_token(&self) -> String {
        let worker = match self.role {
            TokenRole::Manager => digest(WORKER_DOMAIN, &self.secret),
            TokenRole::Worker => self.secret,
        };
        format!("{PREFIX}-{}-W{}", hex(&self.mesh), hex(&worker))
    }

    /// The raft key (only a manager token holds it).
    pub fn raft_key(&self) -> Option<RaftKey> {
        (self.role == TokenRole::Manager).then(|| RaftKey(digest(RAFT_DOMAIN, &self.secret)))
    }

    /// Checks a token presented by a joiner against this (manager) token and the cluster's join
    /// rotations at `now`: the current rotation of its role, or the previous one in its grace.
    /// `None`: refused.
    pub fn verify_join(
        &self,
        presented: &Token,
        keys: &JoinKeys,
        now: Timestamp,
    ) -> Option<TokenRole> {
        if self.role != TokenRole::Manager || !same(&self.mesh, &presented.mesh) {
            return None;
        }
        let role = match presented.role {
            TokenRole::Worker => JoinRole::Worker,
            TokenRole::Manager => JoinRole::Manager,
        };
        let matches = |nonce: &Option<JoinNonce>| match (role, nonce) {
            (JoinRole::Worker, None) => {
                same(&digest(WORKER_DOMAIN, &self.secret), &presented.secret)
            }
            (JoinRole::Worker, Some(nonce)) => same(
                &digest_with(WORKER_ROTATED_DOMAIN, &self.secret, nonce),
                &presented.secret,
            ),
            (JoinRole::Manager, nonce) => {
                let expected = nonce
                    .as_ref()
                    .map(|n| digest_with(MANAGER_JOIN_DOMAIN, &self.secret, n));
                same(&self.secret, &presented.secret)
                    && match (expected, presented.join) {
                        (None, None) => true,
                        (Some(expected), Some(proof)) => same(&expected, &proof),
                        _ => false,
                    }
            }
        };
        keys.accepted(role, now)
            .iter()
            .any(matches)
            .then_some(presented.role)
    }

    /// Checks a token presented by a joiner against this (manager) token, for a cluster whose
    /// join tokens were never rotated. `None`: refused.
    pub fn verify(&self, presented: &Token) -> Option<TokenRole> {
        self.verify_join(presented, &JoinKeys::default(), Timestamp(0))
    }
}

/// The key of the proofs that raft RPCs of a closed cluster carry. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct RaftKey([u8; 32]);

impl fmt::Debug for RaftKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RaftKey(..)")
    }
}

/// A proof that the sender of a raft RPC holds a manager token: an HMAC over both PeerIds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proof(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl RaftKey {
    /// The proof `from` sends `to`.
    pub fn proof(&self, from: &shoal_discovery::PeerId, to: &shoal_discovery::PeerId) -> Proof {
        let mut message = PROOF_DOMAIN.to_vec();
        for peer in [from, to] {
            let bytes = peer.to_bytes();
            message.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            message.extend_from_slice(&bytes);
        }
        Proof(hmac_sha256(&self.0, &message).to_vec())
    }

    /// Whether `proof` is the one `from` sends `to` (compared in constant time).
    pub fn verify(
        &self,
        from: &shoal_discovery::PeerId,
        to: &shoal_discovery::PeerId,
        proof: &Proof,
    ) -> bool {
        let expected = self.proof(from, to);
        expected.0.len() == proof.0.len()
            && expected
                .0
                .iter()
                .zip(&proof.0)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }
}

/// HMAC-SHA256 (RFC 2104) with a 32-byte key.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    padded[..key.len()].copy_from_slice(key);
    let inner_key: Vec<u8> = padded.iter().map(|b| b ^ 0x36).collect();
    let outer_key: Vec<u8> = padded.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = Sha256::new();
    inner.update(&inner_key);
    inner.update(message);
    let inner: [u8; 32] = inner.finalize().into();
    let mut outer = Sha256::new();
    outer.update(&outer_key);
    outer.update(inner);
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_join_tokens_replace_the_old_ones_after_their_grace() -> Result<(), ConsensusError> {
        let ours = Token::generate_manager()?;
        let mut keys = JoinKeys::default();
        let old_worker = Token::parse(&ours.worker_token())?;
        let old_manager = Token::parse(&ours.manager_token().unwrap_or_default())?;
        let nonce = JoinNonce([7; 32]);
        keys.rotate(JoinRole::Worker, nonce, 1_000, Timestamp(5_000));
        keys.rotate(JoinRole::Manager, nonce, 1_000, Timestamp(5_000));
        let token = |role| -> Result<Token, ConsensusError> {
            Token::parse(&ours.join_token(role, Some(&nonce)).unwrap_or_default())
        };
        let (new_worker, new_manager) = (token(JoinRole::Worker)?, token(JoinRole::Manager)?);
        let during = Timestamp(5_500);
        let after = Timestamp(6_000);
        for (presented, role) in [
            (&old_worker, TokenRole::Worker),
            (&old_manager, TokenRole::Manager),
        ] {
            assert_eq!(ours.verify_join(presented, &keys, during), Some(role));
            assert_eq!(ours.verify_join(presented, &keys, after), None);
        }
        assert_eq!(
            ours.verify_join(&new_worker, &keys, after),
            Some(TokenRole::Worker)
        );
        assert_eq!(
            ours.verify_join(&new_manager, &keys, after),
            Some(TokenRole::Manager)
        );
        // The new manager token is still the cluster's: same mesh, same raft key.
        assert_eq!(new_manager.mesh_secret(), ours.mesh_secret());
        assert_eq!(new_manager.role(), TokenRole::Manager);
        assert_eq!(
            new_manager.manager_token(),
            ours.join_token(JoinRole::Manager, Some(&nonce))
        );
        // A proof of another rotation, or one glued to a worker token, is refused.
        let other = ours.join_token(JoinRole::Manager, Some(&JoinNonce([8; 32])));
        let other = Token::parse(&other.unwrap_or_default())?;
        assert_eq!(ours.verify_join(&other, &keys, during), None);
        assert!(Token::parse(&format!("{}-J{}", ours.worker_token(), "0".repeat(64))).is_err());
        // A worker token derives nothing.
        assert_eq!(new_worker.join_token(JoinRole::Worker, None), None);
        Ok(())
    }

    #[test]
    fn both_roles_share_a_fingerprint_that_shows_no_secret() -> Result<(), ConsensusError> {
        let manager = Token::generate_manager()?;
        let worker = Token::parse(&manager.worker_token())?;
        let other = Token::generate_manager()?;
        assert_eq!(manager.fingerprint(), worker.fingerprint());
        assert_ne!(manager.fingerprint(), other.fingerprint());
        assert_eq!(manager.fingerprint().len(), 12);
        let shown = manager.manager_token().unwrap_or_default();
        assert!(!shown.contains(&manager.fingerprint()));
        assert!(!manager.mesh_secret().contains(&manager.fingerprint()));
        Ok(())
    }

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
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 has a 4-byte key; case 1's 20-byte key shows the padding too.
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let mac = hmac_sha256(&key, b"Hi There");
        assert_eq!(
            hex(&mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn only_manager_tokens_prove_raft_membership() -> Result<(), ConsensusError> {
        let m = Token::generate_manager()?;
        let w = Token::parse(&m.worker_token())?;
        assert!(w.raft_key().is_none());
        let key = m
            .raft_key()
            .ok_or_else(|| ConsensusError::Token("no key".into()))?;
        let peer = || {
            shoal_discovery::Keypair::generate_ed25519()
                .public()
                .to_peer_id()
        };
        let (a, b) = (peer(), peer());
        let proof = key.proof(&a, &b);
        assert!(key.verify(&a, &b, &proof));
        assert!(!key.verify(&b, &a, &proof), "bound to the direction");
        assert!(!key.verify(&a, &b, &Proof(vec![0; 32])));
        assert!(!key.verify(&a, &b, &Proof(vec![1, 2, 3])));
        let other = Token::generate_manager()?.raft_key();
        assert!(other.is_some_and(|k| !k.verify(&a, &b, &proof)));
        assert!(!format!("{key:?}").contains(&hex(&key.0)));
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
