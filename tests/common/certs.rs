//! Certificates for TLS tests, made by Debian's `openssl` in a temp dir: a CA, a second CA the
//! gateway does not trust, and leaves signed by either (server certificates for 127.0.0.1 and
//! localhost, one expired, one for another name; client certificates). `openssl ca` because
//! OpenSSL 3.0's `x509 -req` cannot date a certificate in the past.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certs {
    dir: tempfile::TempDir,
}

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which CA signs a leaf.
#[derive(Clone, Copy)]
pub enum Issuer {
    Trusted,
    Other,
}

const SERVER_NAMES: &str = "IP:127.0.0.1,DNS:localhost";

impl Certs {
    /// Both CAs and every leaf the tests use.
    pub fn make() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("egw-certs-")
            .tempdir()
            .expect("temp dir for certificates");
        let certs = Certs { dir };
        for name in ["ca", "other-ca"] {
            certs.make_ca(name);
        }
        certs.leaf("server", Issuer::Trusted, SERVER_NAMES, "serverAuth", None);
        certs.leaf("client", Issuer::Trusted, "DNS:gateway", "clientAuth", None);
        certs.leaf(
            "rogue-client",
            Issuer::Other,
            "DNS:gateway",
            "clientAuth",
            None,
        );
        certs.leaf(
            "unknown-ca-server",
            Issuer::Other,
            SERVER_NAMES,
            "serverAuth",
            None,
        );
        certs.leaf(
            "wrong-name-server",
            Issuer::Trusted,
            "DNS:elsewhere.example",
            "serverAuth",
            None,
        );
        let past = Some(("20200101000000Z", "20200201000000Z"));
        certs.leaf(
            "expired-server",
            Issuer::Trusted,
            SERVER_NAMES,
            "serverAuth",
            past,
        );
        certs
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The trusted CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The CA the gateway does not trust.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// `server`, `client`, `rogue-client`, `unknown-ca-server`, `wrong-name-server`,
    /// `expired-server`.
    pub fn pair(&self, name: &str) -> Pair {
        Pair {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn make_ca(&self, name: &str) {
        let key = self.path(&format!("{name}.key"));
        let cert = self.path(&format!("{name}.pem"));
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
                .args(["-subj", &format!("/CN=egw test {name}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let db = self.path(&format!("{name}-db"));
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("index.txt"), "").unwrap();
        std::fs::write(db.join("serial"), "1000\n").unwrap();
        let conf = format!(
            "[ca]\ndefault_ca = egw\n[egw]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\n\
             serial = {db}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
             copy_extensions = none\n[any]\ncommonName = supplied\n",
            db = db.display()
        );
        std::fs::write(self.path(&format!("{name}.cnf")), conf).unwrap();
    }

    /// A leaf `name` for `sans` (`IP:…,DNS:…`) with extended key usage `usage`, valid for 30
    /// days from now or within `dates` (`YYYYMMDDHHMMSSZ` start and end).
    fn leaf(
        &self,
        name: &str,
        issuer: Issuer,
        sans: &str,
        usage: &str,
        dates: Option<(&str, &str)>,
    ) {
        let pair = self.pair(name);
        let csr = self.path(&format!("{name}.csr"));
        openssl(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(&pair.key)
                .arg("-out")
                .arg(&csr),
        );
        let ca = match issuer {
            Issuer::Trusted => "ca",
            Issuer::Other => "other-ca",
        };
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName = {sans}\nextendedKeyUsage = {usage}\nbasicConstraints = CA:FALSE\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new("openssl");
        cmd.args(["ca", "-batch", "-notext", "-config"])
            .arg(self.path(&format!("{ca}.cnf")))
            .arg("-cert")
            .arg(self.path(&format!("{ca}.pem")))
            .arg("-keyfile")
            .arg(self.path(&format!("{ca}.key")))
            .arg("-extfile")
            .arg(&ext)
            .arg("-in")
            .arg(&csr)
            .arg("-out")
            .arg(&pair.cert);
        match dates {
            Some((start, end)) => cmd.args(["-startdate", start, "-enddate", end]),
            None => cmd.args(["-days", "30"]),
        };
        openssl(&mut cmd);
    }
}

fn openssl(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run openssl (apt install openssl): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
