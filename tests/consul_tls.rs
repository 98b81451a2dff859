//! HTTPS with a private CA and a client certificate (mutual TLS) against a local rustls server.
//! Certificates are made with the `openssl` command; the test is skipped when it is missing,
//! except under `CI=true`, where that is a failure.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flow_proxy::consul::{ConsulClient, ConsulConfig, ConsulError, KvKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Makes `ca.pem`, `server.pem/key` (for 127.0.0.1 and localhost) and `client.pem/key`.
fn make_certs(dir: &Path) -> bool {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let mut ok = openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    for name in ["server", "client"] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subj = format!("/CN={name}");
        ok =
            ok && openssl(
                dir,
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr, "-subj", &subj],
                ]
                .concat(),
            ) && openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            );
    }
    ok
}

/// Serves `GET /v1/kv/a` over TLS, requiring a client certificate signed by the CA.
async fn serve(dir: &Path) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = br#"[{"Key":"a","Value":"b2s=","ModifyIndex":3}]"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nX-Consul-Index: 3\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    if !make_certs(dir.path()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl is unavailable or failed to make the test certificates"
        );
        eprintln!("SKIPPED mutual_tls_with_a_private_ca: openssl unavailable or failed");
        return;
    }
    let port = serve(dir.path()).await;
    let key = KvKey::new("a").unwrap();
    let base = ConsulConfig::new(&format!("https://localhost:{port}"))
        .unwrap()
        .with_ca_cert(Some(dir.path().join("ca.pem")));

    let with_identity = base.clone().with_client_identity(
        Some(dir.path().join("client.pem")),
        Some(dir.path().join("client.key")),
    );
    let client = ConsulClient::new(&with_identity).unwrap();
    let pair = client.kv_get(&key).await.unwrap().unwrap();
    assert_eq!(pair.value, b"ok");

    // Without a client certificate the server refuses the handshake.
    let client = ConsulClient::new(&base).unwrap();
    let err = client.kv_get(&key).await.unwrap_err();
    assert!(
        matches!(err, ConsulError::Connect { .. } | ConsulError::Transport(_)),
        "{err:?}"
    );

    // Without the private CA the server is not trusted.
    let untrusted = ConsulConfig::new(&format!("https://localhost:{port}"))
        .unwrap()
        .with_client_identity(
            Some(dir.path().join("client.pem")),
            Some(dir.path().join("client.key")),
        );
    let client = ConsulClient::new(&untrusted).unwrap();
    assert!(client.kv_get(&key).await.is_err());
}
