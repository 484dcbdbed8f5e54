//! Throwaway TLS material for a local cluster (`corekv-playground --tls`, the tests): one CA, one
//! certificate every node presents (CN `corekv-node`, naming each node's host), and one for
//! clients (CN `corekv-client`), written as PEM files into a directory (keys 0600).
//!
//! Owns: what a local cluster trusts. Must not: be used for a real deployment (one shared node
//! key; real nodes get certificates of their own from the operator's CA).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use corekv_netio::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The CN every node's certificate has.
pub const NODE_CN: &str = "corekv-node";
/// The CN of the clients' certificate.
pub const CLIENT_CN: &str = "corekv-client";

/// The files `generate` wrote.
#[derive(Debug, Clone)]
pub struct LocalCerts {
    pub ca: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl LocalCerts {
    /// A node's TLS files: accepts nodes and clients of this CA.
    pub fn node(&self) -> TlsFiles {
        TlsFiles {
            ca_path: self.ca.clone(),
            cert_path: self.node_cert.clone(),
            key_path: self.node_key.clone(),
            allowed_cn: vec![NODE_CN.to_string(), CLIENT_CN.to_string()],
        }
    }

    /// A client's TLS files: talks to nodes of this CA.
    pub fn client(&self) -> TlsFiles {
        TlsFiles {
            ca_path: self.ca.clone(),
            cert_path: self.client_cert.clone(),
            key_path: self.client_key.clone(),
            allowed_cn: vec![NODE_CN.to_string()],
        }
    }
}

/// The files in `dir`: made once, kept across restarts of the cluster.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<LocalCerts> {
    let certs = LocalCerts {
        ca: dir.join("ca.pem"),
        node_cert: dir.join("node.pem"),
        node_key: dir.join("node-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    };
    if certs.client_key.exists() {
        return Ok(certs);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "corekv local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    write(&certs.ca, &ca_cert.pem(), 0o644)?;
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    names.extend(hosts.iter().filter(|h| !names.contains(h)).cloned().collect::<Vec<_>>());
    leaf(&issuer, NODE_CN, names, (&certs.node_cert, &certs.node_key))?;
    leaf(&issuer, CLIENT_CN, Vec::new(), (&certs.client_cert, &certs.client_key))?;
    Ok(certs)
}

/// A certificate for `cn` naming `names` (server and client use), signed by `issuer`.
fn leaf(issuer: &Issuer<'_, KeyPair>, cn: &str, names: Vec<String>, (cert, key): (&Path, &Path)) -> Result<()> {
    let pair = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let signed = params.signed_by(&pair, issuer)?;
    write(cert, &signed.pem(), 0o644)?;
    write(key, &pair.serialize_pem(), 0o600)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// `--ca-path .. --cert-path .. --key-path ..` of `files`, as arguments (`corekv-ctl`,
/// `corekv-server`; a node adds `--cert-allowed-cn`).
pub fn flags(files: &TlsFiles) -> Vec<String> {
    vec![
        "--ca-path".to_string(),
        files.ca_path.display().to_string(),
        "--cert-path".to_string(),
        files.cert_path.display().to_string(),
        "--key-path".to_string(),
        files.key_path.display().to_string(),
    ]
}

/// A node's arguments: its files and the CNs it accepts.
pub fn node_flags(certs: &LocalCerts) -> Vec<String> {
    let files = certs.node();
    let mut args = flags(&files);
    args.extend(["--cert-allowed-cn".to_string(), files.allowed_cn.join(",")]);
    args
}
