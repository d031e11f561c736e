//! The certificates and keys of one test control plane, generated fresh for each start: a cluster CA
//! (serving and client certificates), a front-proxy CA for the aggregation layer, and the
//! service-account signing key. Every file is PEM, written with mode 0600 where it holds a key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// The group that puts a client into the audit log (see [`crate::audit`]).
pub const MEASURED_GROUP: &str = "lazyscale:measured";
/// The user name of the agent's client certificate.
pub const AGENT_USER: &str = "lazyscale-agent";
/// The user name of the administrator's client certificate (tests and `kubectl`).
pub const ADMIN_USER: &str = "lazyscale-admin";

/// Paths of the generated files.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA certificate (clients trust it; it signs client certificates).
    pub ca_cert: PathBuf,
    /// The cluster CA key (kube-controller-manager signs with it).
    pub ca_key: PathBuf,
    /// The API server's serving certificate and key.
    pub serving_cert: PathBuf,
    /// The API server's serving key.
    pub serving_key: PathBuf,
    /// The front-proxy CA (aggregation layer).
    pub front_proxy_ca: PathBuf,
    /// The front-proxy client certificate.
    pub front_proxy_cert: PathBuf,
    /// The front-proxy client key.
    pub front_proxy_key: PathBuf,
    /// The service-account token signing key.
    pub sa_key: PathBuf,
    /// Its public key (the API server verifies tokens with it).
    pub sa_pub: PathBuf,
    /// The administrator's client certificate (system:masters).
    pub admin_cert: PathBuf,
    /// The administrator's client key.
    pub admin_key: PathBuf,
    /// The agent's client certificate (group [`MEASURED_GROUP`]: audited; cluster-admin through RBAC).
    pub agent_cert: PathBuf,
    /// The agent's client key.
    pub agent_key: PathBuf,
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::NotReady(format!("generate {what}: {e}"))
}

fn write(path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content).map_err(|source| Error::Io {
        what: format!("write {}", path.display()),
        source,
    })
}

fn write_key(path: &Path, content: &str) -> Result<()> {
    write(path, content)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
            Error::Io {
                what: format!("chmod {}", path.display()),
                source,
            }
        })?;
    }
    Ok(())
}

const CA_NAME: &str = "lazyscale-testenv-ca";

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn ca(cn: &str) -> Result<(CertificateParams, KeyPair, String)> {
    let key = KeyPair::generate().map_err(gen_err("a CA key"))?;
    let p = ca_params(cn);
    let cert = p.self_signed(&key).map_err(gen_err("a CA certificate"))?;
    Ok((p, key, cert.pem()))
}

fn client(issuer: &Issuer<'_, &KeyPair>, cn: &str, groups: &[&str]) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(gen_err("a client key"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    // One organization (the group) at most: a distinguished name here holds one value per type.
    if let Some(g) = groups.first() {
        dn.push(DnType::OrganizationName, *g);
    }
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p
        .signed_by(&key, issuer)
        .map_err(gen_err("a client certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let f = |n: &str| dir.join(n);
        let pki = Pki {
            ca_cert: f("ca.crt"),
            ca_key: f("ca.key"),
            serving_cert: f("apiserver.crt"),
            serving_key: f("apiserver.key"),
            front_proxy_ca: f("front-proxy-ca.crt"),
            front_proxy_cert: f("front-proxy-client.crt"),
            front_proxy_key: f("front-proxy-client.key"),
            sa_key: f("sa.key"),
            sa_pub: f("sa.pub"),
            admin_cert: f("admin.crt"),
            admin_key: f("admin.key"),
            agent_cert: f("agent.crt"),
            agent_key: f("agent.key"),
        };

        let (ca_params, ca_key, ca_pem) = ca(CA_NAME)?;
        write(&pki.ca_cert, &ca_pem)?;
        write_key(&pki.ca_key, &ca_key.serialize_pem())?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let serving_key = KeyPair::generate().map_err(gen_err("the serving key"))?;
        let mut sp = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
            "10.96.0.1".to_string(),
        ])
        .map_err(gen_err("the serving certificate"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        sp.distinguished_name = dn;
        sp.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = sp
            .signed_by(&serving_key, &issuer)
            .map_err(gen_err("the serving certificate"))?;
        write(&pki.serving_cert, &serving.pem())?;
        write_key(&pki.serving_key, &serving_key.serialize_pem())?;

        let (admin_cert, admin_key) = client(&issuer, ADMIN_USER, &["system:masters"])?;
        write(&pki.admin_cert, &admin_cert)?;
        write_key(&pki.admin_key, &admin_key)?;
        let (agent_cert, agent_key) = client(&issuer, AGENT_USER, &[MEASURED_GROUP])?;
        write(&pki.agent_cert, &agent_cert)?;
        write_key(&pki.agent_key, &agent_key)?;

        let (fp_params, fp_key, fp_pem) = ca("lazyscale-testenv-front-proxy-ca")?;
        write(&pki.front_proxy_ca, &fp_pem)?;
        let fp_issuer = Issuer::from_params(&fp_params, &fp_key);
        let (fp_cert, fp_client_key) = client(&fp_issuer, "front-proxy-client", &[])?;
        write(&pki.front_proxy_cert, &fp_cert)?;
        write_key(&pki.front_proxy_key, &fp_client_key)?;

        let sa = KeyPair::generate().map_err(gen_err("the service-account key"))?;
        write_key(&pki.sa_key, &sa.serialize_pem())?;
        write(&pki.sa_pub, &sa.public_key_pem())?;
        Ok(pki)
    }

    /// A client certificate and key signed by the cluster CA, for a user in the first of `groups` (PEM
    /// strings).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Io {
                what: format!("read {}", p.display()),
                source,
            })
        };
        let key = KeyPair::from_pem(&read(&self.ca_key)?).map_err(gen_err("the CA key"))?;
        // An issuer is its subject name and key: the same as the CA certificate's.
        let params = ca_params(CA_NAME);
        let issuer = Issuer::new(params, &key);
        client(&issuer, user, groups)
    }
}
