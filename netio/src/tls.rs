//! Mutual TLS on client and peer connections: rustls over glommio's io_uring TCP streams.
//!
//! Owns: loading a CA, a certificate and its key from PEM files; the server and client configs
//! (TLS 1.3 and 1.2, ring's crypto, both sides present a certificate signed by the CA); the
//! allowed-CN rule (`cert_allowed_cn`, TiKV's name: a certificate whose subject CN is not listed
//! is refused during the handshake, before any frame is read); and [`Stream`], one type for
//! plain and TLS connections. Must not: know frames.
//!
//! How TLS runs on io_uring here: futures-rustls drives a rustls session over glommio's
//! `TcpStream` through its `AsyncRead`/`AsyncWrite`; rustls keeps its own record buffers (one
//! TLS record is at most 16 KiB), decrypting into the connection's 64 KiB `FrameReader`
//! buffer and encrypting from the frame bytes the writer hands it. No thread, no copy beyond
//! the cipher's own. Server names are verified as usual (the certificate's SAN must name the
//! host or IP dialled).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::{client, server, TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::{Error, Result};

/// Where a node's or a client's TLS material is, and whom to accept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA every peer's and client's certificate must be signed by (PEM).
    pub ca_path: PathBuf,
    /// This side's certificate (PEM; a chain is allowed) and its private key (PEM).
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Subject CNs allowed on the other side's certificate; empty: any the CA signed.
    pub allowed_cn: Vec<String>,
}

/// The server and client halves of one identity, built once and shared by every connection.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads the files and builds both configs; every failure names the file and the reason.
    pub fn load(files: &TlsFiles) -> Result<Tls> {
        let bad = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
            Error::InvalidArgument(format!("TLS {what} {}: {e}", path.display()))
        };
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&files.ca_path).map_err(|e| bad("CA", &files.ca_path, &e))?;
        for ca in cas {
            let ca = ca.map_err(|e| bad("CA", &files.ca_path, &e))?;
            roots.add(ca).map_err(|e| bad("CA", &files.ca_path, &e))?;
        }
        if roots.is_empty() {
            return Err(bad("CA", &files.ca_path, &"no certificate in the file"));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_path)
            .and_then(|certs| certs.collect())
            .map_err(|e| bad("certificate", &files.cert_path, &e))?;
        let key = PrivateKeyDer::from_pem_file(&files.key_path).map_err(|e| bad("key", &files.key_path, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let allowed = Arc::new(files.allowed_cn.clone());
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| bad("CA", &files.ca_path, &e))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AllowedClients {
                inner: client_verifier,
                allowed: Arc::clone(&allowed),
            }))
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad("certificate", &files.cert_path, &e))?;
        let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| bad("CA", &files.ca_path, &e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .dangerous() // a verifier of our own: webpki's, plus the allowed-CN rule
            .with_custom_certificate_verifier(Arc::new(AllowedServers {
                inner: server_verifier,
                allowed,
            }))
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad("certificate", &files.cert_path, &e))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The server side of a handshake on an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        Ok(Stream::Server(Box::new(self.acceptor.accept(tcp).await?)))
    }

    /// The client side of a handshake with `host` (a DNS name or an IP the server's
    /// certificate must name).
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name {host}: {e}")))?;
        Ok(Stream::Client(Box::new(self.connector.connect(name, tcp).await?)))
    }
}

/// The subject CN of a DER certificate, if it has one.
fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// `Ok` if `allowed` is empty or names the certificate's CN.
fn check_cn(allowed: &[String], end_entity: &CertificateDer<'_>) -> std::result::Result<(), rustls::Error> {
    if allowed.is_empty() {
        return Ok(());
    }
    match common_name(end_entity) {
        Some(cn) if allowed.contains(&cn) => Ok(()),
        cn => Err(rustls::Error::General(format!(
            "certificate CN {cn:?} is not in cert_allowed_cn {allowed:?}"
        ))),
    }
}

/// webpki's client verification (signed by the CA, valid now), then the allowed-CN rule.
#[derive(Debug)]
struct AllowedClients {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Arc<Vec<String>>,
}

impl ClientCertVerifier for AllowedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        check_cn(&self.allowed, end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// webpki's server verification (CA, validity, the name dialled), then the allowed-CN rule.
#[derive(Debug)]
struct AllowedServers {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    allowed: Arc<Vec<String>>,
}

impl ServerCertVerifier for AllowedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        check_cn(&self.allowed, end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A connection, plain or TLS (either side), read and written alike.
pub enum Stream {
    Plain(TcpStream),
    Server(Box<server::TlsStream<TcpStream>>),
    Client(Box<client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(s) => s.get_ref().0,
            Stream::Client(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Client(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Server(s) => Pin::new(&mut **s).poll_close(cx),
            Stream::Client(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}
