//! AMQP over TLS with a private CA: the worker trusts the CA named by `AMQP_CA_FILE` and
//! refuses a broker whose certificate nothing it trusts has signed.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use jiff::Timestamp;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{cny, is, zone_where_it_is, TestEnv};

/// A TLS endpoint of the test's own in front of the plain RabbitMQ listener, with a
/// certificate for `localhost` signed by a CA made for this test.
struct TlsFront {
    addr: SocketAddr,
    ca_pem: String,
    handshakes: Arc<AtomicUsize>,
}

impl TlsFront {
    async fn start(broker: SocketAddr) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "collections e2e test CA");
        let ca = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) = TcpStream::connect(broker).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self {
            addr,
            ca_pem: ca.pem(),
            handshakes,
        }
    }

    /// The test's AMQP URL with `amqps://` and this endpoint under the name `localhost`.
    fn url(&self, plain: &str) -> String {
        let (_, rest) = plain.split_once("://").expect("scheme");
        let (creds, tail) = rest.split_once('@').expect("credentials");
        let (_, path) = tail.split_once('/').expect("vhost");
        format!("amqps://{creds}@localhost:{}/{path}", self.addr.port())
    }
}

fn payment_failed(account: &str, zone: &str) -> serde_json::Value {
    json!({
        "account_id": account,
        "customer": {"timezone": zone},
        "installment": {"number": 2, "due_date": "2026-11-01", "amount": cny(50_000)},
        "overdue_amount": cny(50_000),
        "failure_reason": "insufficient_funds",
        "attempted_at": Timestamp::now(),
    })
}

async fn env_behind_tls() -> (TestEnv, TlsFront) {
    let env = TestEnv::new().await;
    let broker: SocketAddr = "127.0.0.1:5672".parse().expect("broker address");
    let front = TlsFront::start(broker).await;
    (env, front)
}

#[tokio::test]
async fn a_worker_reaches_the_broker_over_tls_signed_by_a_private_ca() {
    let (mut env, front) = env_behind_tls().await;
    let ca_file = env.log_dir.join("ca.pem");
    std::fs::write(&ca_file, &front.ca_pem).expect("write CA");
    env.extra_env
        .push(("AMQP_URL".into(), front.url(&env.amqp_url)));
    env.extra_env
        .push(("AMQP_CA_FILE".into(), ca_file.display().to_string()));
    env.spawn("payment-failed-worker").await;
    let (zone, _) = zone_where_it_is(14);
    env.publish(
        "payment.failed",
        "acc-tls",
        payment_failed("acc-tls", &zone),
    )
    .await;
    let got = env
        .tasks
        .wait_for(
            1,
            Duration::from_secs(30),
            is("task.scheduled", "collection_call", "acc-tls"),
        )
        .await;
    assert_eq!(got.len(), 1, "the worker consumed and published over TLS");
    assert!(front.handshakes.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_broker_certificate_no_trusted_ca_signed_is_refused() {
    let (mut env, front) = env_behind_tls().await;
    env.extra_env
        .push(("AMQP_URL".into(), front.url(&env.amqp_url)));
    env.spawn("payment-failed-worker").await;
    let log = env.log_dir.join("payment-failed-worker-0.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("AMQP session ended") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.contains("AMQP session ended") && text.to_lowercase().contains("certificate"),
        "the worker names the untrusted certificate: {text}"
    );
    assert!(!text.contains("\"consuming\""), "it never consumed: {text}");
    assert_eq!(front.handshakes.load(Ordering::SeqCst), 0);
}
