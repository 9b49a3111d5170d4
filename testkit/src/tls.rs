//! A private PKI for the mocks (a CA, server and client certificates made with rcgen) and an
//! HTTP/2-over-TLS server that serves an axum router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tempfile::TempPath;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A certificate authority of the tests' own.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate in a PEM file, for `ca_file` settings.
    pub ca_file: TempPath,
}

/// A certificate and its key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("callrelay test CA ({name})"));
        params.distinguished_name = dn;
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = temp_file("ca.pem", issuer.pem());
        Self { issuer, ca_file }
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now for a year.
    pub fn issue(&self, names: &[&str], common_name: &str) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls server configuration for `127.0.0.1` and `localhost`, offering HTTP/2.
    /// With `client_ca`, clients must present a certificate issued by it.
    pub fn server_config(&self, client_ca: Option<&TestCa>) -> Arc<rustls::ServerConfig> {
        let issued = self.issue(&["127.0.0.1", "localhost"], "localhost");
        let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.issuer.der().clone()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Writes `contents` to a fresh temporary file, removed when the returned path is dropped.
pub fn temp_file(suffix: &str, contents: impl AsRef<[u8]>) -> TempPath {
    let mut file = tempfile::Builder::new()
        .prefix("callrelay-")
        .suffix(&format!("-{suffix}"))
        .tempfile()
        .unwrap();
    std::io::Write::write_all(&mut file, contents.as_ref()).unwrap();
    file.into_temp_path()
}

/// The client certificate a connection presented (its DER bytes), visible to handlers as an
/// axum `Extension`.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(pub Option<Vec<u8>>);

/// A running HTTPS (HTTP/2) server.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// TLS connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` over TLS on a free loopback port.
pub async fn serve(router: Router, config: Arc<rustls::ServerConfig>) -> TlsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                let service =
                    TowerToHyperService::new(router.layer(axum::Extension(PeerCertificate(peer))));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer {
        addr,
        connections,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mock server speaks HTTP/2 over TLS, trusted through the CA file, as the push
    /// channels will see it.
    #[tokio::test]
    async fn serves_http2_over_tls_trusted_through_the_ca_file() {
        let ca = TestCa::new("self-test");
        assert_eq!(std::fs::read_to_string(&ca.ca_file).unwrap(), ca.ca_pem());
        let handler = |axum::Extension(PeerCertificate(peer)): axum::Extension<PeerCertificate>| async move {
            if peer.is_some() {
                "hello, certified client"
            } else {
                "hello"
            }
        };
        let server = serve(
            Router::new().route("/", axum::routing::get(handler)),
            ca.server_config(None),
        )
        .await;
        let tls = callrelay::channels::push_client::TlsSettings {
            extra_ca: callrelay::config::apps::load_ca_file(&ca.ca_file).unwrap(),
            identity: None,
        };
        let client = callrelay::channels::push_client::client(&tls).unwrap();
        for _ in 0..3 {
            let r = client.get(server.url()).send().await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.text().await.unwrap(), "hello");
        }
        assert_eq!(
            server.connection_count(),
            1,
            "one connection carries every request"
        );
        // Without the CA the server is not trusted.
        let plain = callrelay::channels::push_client::client(&Default::default()).unwrap();
        assert!(plain.get(server.url()).send().await.is_err());
    }
}
