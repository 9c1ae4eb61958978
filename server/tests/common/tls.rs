//! Certificates made by the test: a CA, a server certificate for 127.0.0.1 and a client
//! certificate, written as PEM files the way a deployment mounts them.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

pub struct TlsFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of these.
    pub other_ca: PathBuf,
}

impl TlsFiles {
    /// Fresh certificates in a new folder under the system's temporary one.
    pub fn generate(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sse-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, ca) = new_ca("sse test CA");
        let (other_pem, _) = new_ca("another CA");
        let write = |file: &str, text: String| {
            let path = dir.join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (server_cert, server_key) = leaf(&ca, "redis", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(&ca, "broker", ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca: write("ca.pem", ca_pem),
            other_ca: write("other-ca.pem", other_pem),
            server_cert: write("server.pem", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client.key", client_key),
            dir,
        }
    }

    /// Writes `text` to a file of the folder (a password, as a secrets mount holds it).
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA named `name`: names must differ from the leaves', or OpenSSL (redis-server checking a
/// client certificate) takes a leaf for self-signed.
fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate for 127.0.0.1 and localhost, signed by `ca`: `(cert, key)` as PEM.
fn leaf(ca: &Issuer<'static, KeyPair>, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages.push(usage);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}
