//! Mutual TLS between two endpoints on loopback: what the handshake accepts and refuses.

use std::path::Path;

use corekv_netio::tls::{Stream, Tls, TlsFiles};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A CA in `dir` and a certificate for each CN, named `<cn>.pem` / `<cn>-key.pem`; returns the
/// CA's path.
fn pki(dir: &Path, cns: &[&str]) -> std::path::PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for cn in cns {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, *cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        std::fs::write(dir.join(format!("{cn}.pem")), p.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(dir.join(format!("{cn}-key.pem")), key.serialize_pem()).unwrap();
    }
    dir.join("ca.pem")
}

fn files(dir: &Path, cn: &str, allowed: &[&str]) -> TlsFiles {
    TlsFiles {
        ca_path: dir.join("ca.pem"),
        cert_path: dir.join(format!("{cn}.pem")),
        key_path: dir.join(format!("{cn}-key.pem")),
        allowed_cn: allowed.iter().map(|s| s.to_string()).collect(),
    }
}

/// One handshake and one echo: (the server's result, the client's result).
fn exchange(server: TlsFiles, client: Option<TlsFiles>) -> (Result<(), String>, Result<(), String>) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let server = Tls::load(&server).unwrap();
            let client = client.map(|c| Tls::load(&c).unwrap());
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = glommio::spawn_local(async move {
                let tcp = listener.accept().await.map_err(|e| e.to_string())?;
                let mut s = server.accept(tcp).await.map_err(|e| e.to_string())?;
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                s.write_all(&buf).await.map_err(|e| e.to_string())?;
                s.flush().await.map_err(|e| e.to_string())
            });
            let dialled = async {
                let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let mut s = match &client {
                    Some(tls) => tls.connect("127.0.0.1", tcp).await.map_err(|e| e.to_string())?,
                    None => Stream::Plain(tcp),
                };
                s.write_all(b"hello").await.map_err(|e| e.to_string())?;
                s.flush().await.map_err(|e| e.to_string())?;
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                (&buf == b"hello").then_some(()).ok_or("echo differs".to_string())
            }
            .await;
            (accepted.await, dialled)
        })
        .unwrap()
        .join()
        .unwrap()
}

// Proves the allowed path: both sides present certificates of one CA with allowed CNs, and
// bytes cross the TLS stream both ways.
#[test]
fn same_ca_and_allowed_cns_talk() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path(), &["node", "client"]);
    let (server, client) = exchange(
        files(dir.path(), "node", &["client"]),
        Some(files(dir.path(), "client", &["node"])),
    );
    assert_eq!((server, client), (Ok(()), Ok(())));
}

// Proves a client whose certificate another CA signed, one whose CN is not allowed, and a
// plain one are each refused by the server during the handshake (nothing read from them).
#[test]
fn strangers_are_refused_in_the_handshake() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    pki(ours.path(), &["node", "client", "intruder"]);
    pki(theirs.path(), &["client"]);
    let server = || files(ours.path(), "node", &["client"]);
    let mut foreign = files(theirs.path(), "client", &[]);
    foreign.ca_path = ours.path().join("ca.pem"); // trusts us, is not trusted back
    for (client, why) in [
        (Some(foreign), "invalid peer certificate"),
        (Some(files(ours.path(), "intruder", &[])), "cert_allowed_cn"),
        (None, ""),
    ] {
        let (accepted, _) = exchange(server(), client);
        let err = accepted.expect_err("the server refuses");
        assert!(err.contains(why), "{err}");
    }
}

// Proves the client checks the server too: a server CN the client does not allow is refused.
#[test]
fn a_server_outside_the_allowed_cns_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path(), &["node", "client"]);
    let (_, dialled) = exchange(
        files(dir.path(), "node", &[]),
        Some(files(dir.path(), "client", &["other"])),
    );
    let err = dialled.expect_err("the client refuses");
    assert!(err.contains("cert_allowed_cn"), "{err}");
}
