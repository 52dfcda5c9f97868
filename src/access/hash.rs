//! How a password is stored in the htpasswd file.
//!
//! nginx re-hashes the password on every request, so the scheme's cost is paid per
//! request, not per login. The passwords here are long random secrets that are revoked
//! when their activity ends: a slow hash adds nothing against brute force of them and
//! costs the endpoint its throughput (README, "Security, in numbers").

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha1::{Digest, Sha1};

/// Salt for {SSHA}: 8 random bytes, as OpenLDAP's slappasswd uses.
const SSHA_SALT_LEN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashScheme {
    /// `{SSHA}base64(sha1(password ‖ salt) ‖ salt)`: nginx verifies it as fast as
    /// `{PLAIN}`; Apache's htpasswd cannot verify it.
    Ssha,
    /// `{SHA}base64(sha1(password))`: unsalted; nginx and Apache's htpasswd verify it.
    Sha,
    /// `$2y$<cost>$…`: for operators who require bcrypt, at the throughput cost in README.
    Bcrypt { cost: u32 },
}

impl HashScheme {
    pub const NAMES: &'static str = "ssha, sha, bcrypt";

    /// From the configuration's `password_hash` and `bcrypt_cost`.
    pub fn from_config(name: &str, bcrypt_cost: u32) -> Result<Self, String> {
        match name {
            "ssha" => Ok(Self::Ssha),
            "sha" => Ok(Self::Sha),
            "bcrypt" => Ok(Self::Bcrypt { cost: bcrypt_cost }),
            other => Err(format!(
                "key `password_hash`: \"{}\" is not a scheme; accepted: {}",
                crate::text::printable(other),
                Self::NAMES
            )),
        }
    }

    /// The htpasswd field for `password`, with fresh salt from the OS CSPRNG.
    pub fn hash(&self, password: &str) -> Result<String, String> {
        match *self {
            Self::Ssha => {
                let mut salt = [0u8; SSHA_SALT_LEN];
                OsRng.fill_bytes(&mut salt);
                let mut digest = Sha1::new();
                digest.update(password.as_bytes());
                digest.update(salt);
                let mut raw = digest.finalize().to_vec();
                raw.extend_from_slice(&salt);
                Ok(format!("{{SSHA}}{}", BASE64.encode(raw)))
            }
            Self::Sha => Ok(format!(
                "{{SHA}}{}",
                BASE64.encode(Sha1::digest(password.as_bytes()))
            )),
            Self::Bcrypt { cost } => bcrypt::hash_with_result(password, cost)
                .map(|h| h.format_for_version(bcrypt::Version::TwoY))
                .map_err(|e| format!("cannot hash the password with bcrypt cost {cost}: {e}")),
        }
    }
}

impl fmt::Display for HashScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ssha => f.write_str("ssha"),
            Self::Sha => f.write_str("sha"),
            Self::Bcrypt { cost } => write!(f, "bcrypt (cost {cost})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssha_is_salted_sha1_with_the_salt_appended() {
        let a = HashScheme::Ssha.hash("secret").unwrap();
        let b = HashScheme::Ssha.hash("secret").unwrap();
        assert_ne!(a, b, "fresh salt each time");
        let raw = BASE64.decode(a.strip_prefix("{SSHA}").unwrap()).unwrap();
        assert_eq!(raw.len(), 20 + SSHA_SALT_LEN);
        let (digest, salt) = raw.split_at(20);
        let mut check = Sha1::new();
        check.update(b"secret");
        check.update(salt);
        assert_eq!(digest, check.finalize().as_slice());
    }

    #[test]
    fn sha_matches_the_known_vector() {
        // {SHA} of "password", as `htpasswd -s` writes it.
        assert_eq!(
            HashScheme::Sha.hash("password").unwrap(),
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
        );
    }

    #[test]
    fn bcrypt_uses_the_2y_prefix_and_cost() {
        let h = HashScheme::Bcrypt { cost: 4 }.hash("pw").unwrap();
        assert!(h.starts_with("$2y$04$"), "{h}");
        assert!(bcrypt::verify("pw", &h).unwrap());
    }

    #[test]
    fn unknown_schemes_are_refused_with_the_list() {
        let err = HashScheme::from_config("md5", 5).unwrap_err();
        assert!(err.contains("accepted: ssha, sha, bcrypt"), "{err}");
    }
}
