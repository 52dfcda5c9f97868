//! TLS to the operator's node: rustls, the system's trust store and the operator's own
//! CA, with hostname verification that no key turns off.
//!
//! rustls rather than OpenSSL: no C library to match at build and run time, and its
//! verifier checks names, dates and chains without options to get wrong.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Where Debian keeps the system's trust store, for the message when it is empty.
const SYSTEM_STORE: &str = "/etc/ssl/certs (Debian: apt-get install ca-certificates)";

/// The system's trusted CAs, read once per process: only a network whose node is
/// reached over TLS reads them, and a provider's every runtime reads the same store.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            log::debug!("the system's trust store: {error}");
        }
        found.certs
    })
}

/// The CA certificates in the PEM file `path`; the error names the file and what was
/// wrong with it.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown} is not a PEM file of certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown} holds no certificate; accepted: a PEM file with one or more \"BEGIN CERTIFICATE\" blocks"
        ));
    }
    Ok(certs)
}

/// The connector every TLS connection to one network's node uses: the system's CAs,
/// plus those of `ca_file` when the operator runs a private CA. ALPN asks for
/// HTTP/1.1, the only protocol the gateway speaks to the node.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let (_, unparsable) = roots.add_parsable_certificates(system_roots().iter().cloned());
    if unparsable > 0 {
        log::debug!("the system's trust store: {unparsable} certificates rustls cannot use");
    }
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| {
                format!(
                    "{}: a certificate rustls cannot use as a CA: {e}",
                    path.display()
                )
            })?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA to verify the node's certificate with: the system's trust store {SYSTEM_STORE} is empty and no `ca_file` is set"
        ));
    }
    // rustls 0.23.48 deprecates ring's provider for lacking post-quantum key
    // exchange. The link to a provider's own node does not carry secrets that must
    // outlive a future quantum computer, and aws-lc-rs, the alternative, is a C
    // library built from source on every clean build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
