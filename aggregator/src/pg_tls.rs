//! TLS to PostgreSQL (rustls), with libpq's meaning of `sslmode` and `sslrootcert` in the
//! database URL, so the URL a platform team hands out works as it does for `psql`:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | |
//! | `allow`, `prefer` (default) | if the server offers it | not checked |
//! | `require` | always | not checked; with `sslrootcert`, as `verify-ca` |
//! | `verify-ca` | always | chains to `sslrootcert` (else the system's roots) |
//! | `verify-full` | always | that, and names the host of the URL |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the system's roots (libpq
//! falls back to `~/.postgresql/root.crt`; a service has no home to speak of, so the system's
//! roots are the fallback here). rust-postgres knows neither the verifying modes nor
//! `sslrootcert`: they are taken out of the URL before it parses the rest.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not at all (`prefer`, `require` without a root file): encryption without knowing whom to.
    Nothing,
    /// It chains to a trusted root (`verify-ca`, `require` with a root file).
    Chain,
    /// It chains to a trusted root and names the host (`verify-full`).
    Full,
}

/// A database URL read for its TLS settings.
#[derive(Debug, PartialEq, Eq)]
pub struct TlsUrl {
    /// The URL as rust-postgres reads it (verifying modes as `require`, `sslrootcert` removed;
    /// every other parameter as it was written).
    pub url: String,
    pub check: Check,
    /// What rust-postgres is told: `disable`, `prefer` (TLS if the server offers it) or `require`.
    pub mode: &'static str,
    /// `sslrootcert`, if given.
    pub root: Option<String>,
}

impl TlsUrl {
    /// Reads `sslmode` and `sslrootcert` out of `url`; the error names a wrong `sslmode`.
    pub fn parse(url: &str) -> Result<TlsUrl, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = "prefer".to_string();
        let mut root: Option<String> = None;
        let mut rest: Vec<&str> = Vec::new();
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            match form_urlencoded::parse(segment.as_bytes()).next() {
                Some((k, v)) if k == "sslmode" => mode = v.into_owned(),
                Some((k, v)) if k == "sslrootcert" => root = Some(v.into_owned()),
                _ => rest.push(segment),
            }
        }
        let (pg_mode, check) = match (mode.as_str(), root.is_some()) {
            ("disable", _) => ("disable", Check::Nothing),
            ("allow" | "prefer", _) => ("prefer", Check::Nothing),
            ("require", false) => ("require", Check::Nothing),
            ("require", true) | ("verify-ca", _) => ("require", Check::Chain),
            ("verify-full", _) => ("require", Check::Full),
            (other, _) => {
                return Err(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        };
        let url = format!("{base}?{}sslmode={pg_mode}", rest.iter().map(|s| format!("{s}&")).collect::<String>());
        Ok(TlsUrl { url, check, mode: pg_mode, root })
    }

    /// The connector every connection of this URL uses; the error names what is wrong with
    /// `sslrootcert`.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.check {
            Check::Nothing => Arc::new(Unchecked(provider)),
            Check::Chain | Check::Full => {
                let roots = Arc::new(roots(self.root.as_deref())?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
                Arc::new(Verified { webpki, names: self.check == Check::Full })
            }
        };
        Ok(MakeRustlsConnect::new(config.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()))
    }
}

/// The trusted roots: the PEM file `sslrootcert` names, or the system's.
fn roots(file: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match file {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system CA certificates found: name a PEM file with sslrootcert=".into());
            }
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path}: no CA certificate in the file"));
            }
        }
    }
    Ok(store)
}

/// Checks the chain and, for `verify-full`, the name.
#[derive(Debug)]
struct Verified {
    webpki: Arc<WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // `verify-ca`: a certificate of a trusted CA for another name is accepted (webpki
            // checks the name after the chain, so this error means the chain held).
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer` and `require` as libpq has them: any certificate, but the handshake's signatures
/// still checked (the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(url: &str) -> TlsUrl {
        TlsUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn libpq_modes_map_to_what_rust_postgres_reads_and_a_check() {
        let t = read("postgres://u@db.example/x");
        assert_eq!((t.url.as_str(), t.check, t.mode), ("postgres://u@db.example/x?sslmode=prefer", Check::Nothing, "prefer"));
        let t = read("postgres://u@h/x?sslmode=disable&options=-c%20search_path%3Dw+x");
        assert_eq!((t.url.as_str(), t.mode), ("postgres://u@h/x?options=-c%20search_path%3Dw+x&sslmode=disable", "disable"));
        assert_eq!(read("postgres://u@h/x?sslmode=require").check, Check::Nothing);
        assert_eq!(read("postgres://u@h/x?sslmode=allow").url, "postgres://u@h/x?sslmode=prefer");
        let t = read("postgres://u@h/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!((t.url.as_str(), t.check, t.root.as_deref()), ("postgres://u@h/x?sslmode=require", Check::Full, Some("/etc/ca.pem")));
        assert_eq!(read("postgres://u@h/x?sslmode=verify-ca").check, Check::Chain);
        assert_eq!(read("postgres://u@h/x?sslrootcert=/ca.pem&sslmode=require").check, Check::Chain);
        assert_eq!(read("postgres://u@h/x?sslrootcert=/ca.pem").check, Check::Nothing, "prefer never checks");
    }

    #[test]
    fn a_bad_mode_or_root_file_is_refused_naming_it() {
        let e = TlsUrl::parse("postgres://u@h/x?sslmode=verify").err().unwrap();
        assert!(e.contains("sslmode=verify"), "{e}");
        let e = read("postgres://u@h/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").connector().err().unwrap();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("mcp-warden-pgtls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = read(&format!("postgres://u@h/x?sslmode=verify-ca&sslrootcert={}", junk.display())).connector().err().unwrap();
        assert!(e.contains("no CA certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read("postgres://u@h/x?sslmode=require").connector().is_ok(), "no roots needed when nothing is checked");
    }
}
