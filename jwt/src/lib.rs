//! Verification of JWT bearer tokens for the Gatehouse `jwtAuth` filter.
//!
//! The data plane builds one [`Verifier`] per filter and calls
//! [`Verifier::verify`] on the request path; it never blocks and takes no
//! locks once keys are loaded. The controller uses the same types
//! ([`KeySet::from_jwks`], [`Algorithm`]'s `FromStr`, [`Verifier::new`],
//! [`validate_jwks_url`]) to reject bad configuration before it is shipped.

mod b64;
mod bearer;
mod claims;
mod keys;
mod rejection;
mod remote;
mod settings;
mod verify;

pub use bearer::{Credential, bearer_token, credential};
pub use claims::Claims;
pub use keys::KeySet;
pub use rejection::Rejection;
pub use remote::{RemoteJwks, RemoteOptions, validate_jwks_url};
pub use settings::{Algorithm, DEFAULT_CLOCK_SKEW, DEFAULT_MAX_TOKEN_BYTES, Settings};
pub use verify::{Keys, Verifier};

#[cfg(test)]
mod tests;
