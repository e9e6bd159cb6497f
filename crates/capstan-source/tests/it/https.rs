//! HTTPS through gix's reqwest transport, which links no crypto provider of its own: the TLS
//! handshake with a real rustls server runs on ring (the provider capstan-source installs), and
//! a certificate nobody vouches for is refused with the reason.

use capstan_source::{Credentials, RepoCache, RepoUrl};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;

#[test]
fn https_handshake_runs_on_ring_and_refuses_an_untrusted_certificate() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The server's view of the one handshake: what it failed with, once the client gave up.
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 1];
        tls.read(&mut buf).map_err(|e| e.to_string())
    });

    let tmp = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(tmp.path().join("cache")).unwrap();
    let url = RepoUrl::parse(&format!("https://localhost:{port}/app.git")).unwrap();
    let err = cache
        .resolve(&url, &Credentials::None, "main")
        .expect_err("an untrusted certificate is refused");
    let message = format!("{err}");
    let mut chain = message.clone();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(" / {e}"));
        source = e.source();
    }
    assert!(chain.contains(&format!("localhost:{port}")), "{chain}");
    // The client read the server's certificate (key exchange and decryption worked) and
    // rejected its issuer, telling the server so.
    let server_saw = server.join().expect("server thread").unwrap_err();
    assert!(
        server_saw.contains("UnknownCA") || server_saw.contains("BadCertificate"),
        "server: {server_saw}; client: {chain}"
    );
}
