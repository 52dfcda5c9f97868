//! The operator's node as it often really is: on another machine, behind a
//! TLS-terminating reverse proxy, reached at an `https://` or `wss://` URL with a path.
//!
//! The runtime's `node.http` / `node.ws` URLs may name such a front, and it speaks TLS to
//! it with rustls: the system trust store plus an optional `node.ca_file`, hostname
//! verification always on. To test that for real, [`NodeFront`] is a plain nginx (not the
//! shipped site) in front of an upstream node (anvil, see [`crate::anvil`]), serving only
//! one path prefix, and [`Pki`] makes its certificates with openssl: one a client should
//! accept when it trusts the test CA, and one for each way it must refuse (wrong name,
//! expired, unknown CA). The front's access log tells a test which paths and Host headers
//! arrived, and over how many connections (one TLS handshake per connection).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::nginx::{free_port, is_root};
use crate::process::{listens, try_eventually_blocking};

/// A certificate (PEM, the leaf alone) and its private key (PEM, unencrypted).
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A private CA and server certificates made with openssl (EC P-256 keys), all X.509 v3
/// with the extensions rustls/webpki insists on: the CA `basicConstraints=critical,CA:TRUE`
/// and `keyUsage=critical,keyCertSign,cRLSign`; the leaves `CA:FALSE`,
/// `digitalSignature` and `serverAuth`.
#[derive(Clone, Debug)]
pub struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    /// Signed by the CA for `DNS:localhost, IP:127.0.0.1`, valid now.
    pub good: CertPair,
    /// Signed by the CA, valid now, but only for `DNS:other.invalid`: reached as
    /// localhost or 127.0.0.1 it fails hostname verification.
    pub wrong_name: CertPair,
    /// Signed by the CA for localhost and 127.0.0.1, valid only from 2020-01-01 to
    /// 2021-01-01.
    pub expired: CertPair,
    /// For localhost and 127.0.0.1, valid now, but signed by a second, throwaway CA that
    /// tests never trust.
    pub unknown_ca: CertPair,
}

/// The openssl configuration: relative paths only, as openssl runs in the PKI's folder.
/// `openssl ca` needs its database and serial files; `copy_extensions = none` and the
/// sections named on the command line decide every extension, not the system's
/// openssl.cnf.
const OPENSSL_CNF: &str = "\
[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = placeholder

[ ca ]
default_ca = nodefront_ca

[ nodefront_ca ]
database = index.txt
serial = serial
new_certs_dir = issued
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_any ]
commonName = supplied

[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[ server_localhost ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ server_other ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.invalid
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// How long the CAs and the valid leaves last, from now.
const DAYS: &str = "30";

impl Pki {
    /// Makes the CAs and the certificates in `dir` (created if missing).
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir.join("issued")).expect("the PKI folder");
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();

        let ca = new_ca(dir, "ca", "ya-runtime-erigon test CA");
        let other_ca = new_ca(dir, "other_ca", "ya-runtime-erigon untrusted test CA");
        let valid = ["-days", DAYS].as_slice();
        let past = [
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
        ]
        .as_slice();
        let good = new_leaf(dir, "good", "ca", "localhost", "server_localhost", valid);
        let wrong_name = new_leaf(
            dir,
            "wrong_name",
            "ca",
            "other.invalid",
            "server_other",
            valid,
        );
        let expired = new_leaf(dir, "expired", "ca", "localhost", "server_localhost", past);
        let unknown_ca = new_leaf(
            dir,
            "unknown_ca",
            "other_ca",
            "localhost",
            "server_localhost",
            valid,
        );
        Pki {
            ca,
            other_ca,
            good,
            wrong_name,
            expired,
            unknown_ca,
        }
    }

    /// The CA's certificate (PEM): what a client trusts, e.g. as `node.ca_file`.
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// The throwaway CA's certificate (PEM), which signed [`Pki::unknown_ca`]: for a test
    /// that trusting it instead makes that certificate pass.
    pub fn untrusted_ca_file(&self) -> &Path {
        &self.other_ca
    }
}

/// A self-signed CA `<name>.pem` with its key `<name>.key`.
fn new_ca(dir: &Path, name: &str, cn: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            "openssl.cnf",
            "-extensions",
            "v3_ca",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            DAYS,
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A leaf `<name>.pem` with its key `<name>.key`, for `cn`, signed by the CA `ca` with
/// the extensions section `extensions` and the validity `dates` (`-days`, or
/// `-startdate`/`-enddate`: `openssl ca` sets any period, where OpenSSL 3.0's
/// `openssl x509` can only start now).
fn new_leaf(
    dir: &Path,
    name: &str,
    ca: &str,
    cn: &str,
    extensions: &str,
    dates: &[&str],
) -> CertPair {
    let (csr, cert, key) = (
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.key"),
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    let mut args = vec![
        "ca",
        "-batch",
        "-notext",
        "-config",
        "openssl.cnf",
        "-extensions",
        extensions,
    ];
    let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    args.extend(["-cert", &ca_cert, "-keyfile", &ca_key]);
    args.extend(dates);
    args.extend(["-in", &csr, "-out", &cert]);
    openssl(dir, &args);
    CertPair {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// Runs openssl in `dir`, panicking with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is needed ({e}); install it: apt-get install -y openssl nginx-light")
        });
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One line of a [`NodeFront`]'s access log. nginx writes it when the request ends: for
/// a WebSocket, when the connection closes (status 101).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// nginx's serial number of the client connection: one per TLS handshake.
    pub connection: u64,
    /// Which request on that connection this was, from 1.
    pub request: u64,
    pub method: String,
    /// As the client sent it, before the path prefix is replaced.
    pub uri: String,
    pub status: u16,
    /// The Host header; "-" if none.
    pub host: String,
    /// `r` if the TLS session was resumed, `.` if not, `-` without TLS.
    pub ssl_session_reused: String,
}

/// The access log's format: space-separated fields that hold no spaces (nginx escapes
/// them in the URI; an empty value is written as `-`), parsed by [`Access`].
const LOG_FORMAT: &str = "$connection $connection_requests $request_method $request_uri \
                          $status $http_host $ssl_session_reused";

/// nginx on `127.0.0.1:<free port>`, with or without TLS, that proxies one path prefix
/// to an upstream node over kept-alive connections (WebSocket upgrades included) and
/// answers 404 for any other path. Stopped (SIGTERM, then waited for) when dropped.
pub struct NodeFront {
    port: u16,
    path: String,
    prefix: PathBuf,
    child: Child,
}

impl NodeFront {
    /// TLS with `pair` in front of `upstream`, serving `path` (see [`NodeFront::plain`]).
    pub fn tls(prefix: &Path, upstream: SocketAddr, pair: &CertPair, path: &str) -> NodeFront {
        Self::start(prefix, upstream, Some(pair), path)
    }

    /// Plain HTTP in front of `upstream`. `path` is a prefix starting with `/`, such as
    /// `/` or `/rpc/eth/`: `<path>` and `<path><rest>` are proxied to the upstream's `/`
    /// and `/<rest>` (`/rpc/eth`, without the slash, too); any other path answers 404.
    /// nginx runs under the private folder `prefix` (created if missing).
    pub fn plain(prefix: &Path, upstream: SocketAddr, path: &str) -> NodeFront {
        Self::start(prefix, upstream, None, path)
    }

    /// Stops nginx (as dropping does).
    pub fn stop(self) {}

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's URL as a client is given it, e.g. `https://localhost:PORT/rpc/eth/`,
    /// for `scheme` `http`, `https`, `ws` or `wss`.
    pub fn url(&self, scheme: &str) -> String {
        self.url_at(scheme, "localhost")
    }

    /// [`NodeFront::url`] with another host name or address, e.g. `127.0.0.1`.
    pub fn url_at(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }

    /// The access log's lines so far (see [`Access`] for their fields).
    pub fn access_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.prefix.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The access log's size so far, in bytes: cheap to look at again and again, to see
    /// that it has stopped growing.
    pub fn access_log_bytes(&self) -> u64 {
        std::fs::metadata(self.prefix.join("logs/access.log")).map_or(0, |m| m.len())
    }

    /// The access log's lines so far, parsed.
    pub fn accesses(&self) -> Vec<Access> {
        self.access_lines()
            .iter()
            .map(|line| parse_access(line))
            .collect()
    }

    /// The distinct client connections that completed a request so far: with TLS, the
    /// handshakes made.
    pub fn connections(&self) -> BTreeSet<u64> {
        self.accesses().iter().map(|a| a.connection).collect()
    }

    /// The Host headers of the requests so far, in order.
    pub fn hosts(&self) -> Vec<String> {
        self.accesses().into_iter().map(|a| a.host).collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    fn start(
        prefix: &Path,
        upstream: SocketAddr,
        pair: Option<&CertPair>,
        path: &str,
    ) -> NodeFront {
        assert!(
            path.starts_with('/')
                && !path
                    .chars()
                    .any(|c| c.is_whitespace() || ";{}'\"\\$#".contains(c)),
            "a NodeFront path is a plain prefix starting with /, not {path:?}"
        );
        for dir in ["logs", "tmp", "conf"] {
            std::fs::create_dir_all(prefix.join(dir)).expect("the NodeFront prefix");
        }
        if is_root() {
            // nginx's workers run as www-data and may need to reach tmp/.
            std::fs::set_permissions(prefix, std::fs::Permissions::from_mode(0o711)).unwrap();
            let status = Command::new("chown")
                .args(["-R", "www-data:www-data"])
                .arg(prefix.join("tmp"))
                .status()
                .expect("chown");
            assert!(status.success(), "chown www-data {}", prefix.display());
        }
        // The port is free when picked but may be taken before nginx binds it: retry.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let conf = prefix.join("conf/nginx.conf");
            std::fs::write(&conf, config(prefix, port, upstream, pair, path)).unwrap();
            let error_log = prefix.join("logs/error.log");
            let _ = std::fs::remove_file(&error_log);
            let child = crate::nginx::command(prefix, &conf)
                .arg("-e")
                .arg(&error_log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start nginx ({e}); install it: apt-get install -y nginx-light")
                });
            let mut front = NodeFront {
                port,
                path: path.to_string(),
                prefix: prefix.to_path_buf(),
                child,
            };
            match front.wait_listening() {
                Ok(()) => return front,
                Err(e) if e.contains("Address already in use") && attempts < 5 => continue,
                Err(e) => panic!(
                    "{e}\n(nginx and openssl are needed: apt-get install -y openssl nginx-light)"
                ),
            }
        }
    }

    /// nginx offers no readiness signal in the foreground; look at its port, bounded.
    fn wait_listening(&mut self) -> Result<(), String> {
        let (port, child) = (self.port, &mut self.child);
        let listening =
            try_eventually_blocking(Duration::from_secs(10), || match child.try_wait() {
                Ok(Some(status)) => Ok(Err(status)),
                _ if listens(port) => Ok(Ok(())),
                _ => Err(String::new()),
            });
        match listening {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(format!(
                "the NodeFront's nginx exited with {status}: {}",
                self.error_log()
            )),
            Err(failure) => Err(format!(
                "the NodeFront's nginx did not listen on {port}: {failure}: {}",
                self.error_log()
            )),
        }
    }
}

impl Drop for NodeFront {
    /// SIGTERM is nginx's fast shutdown: the master stops its workers, then exits.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The whole nginx.conf of a front.
fn config(
    prefix: &Path,
    port: u16,
    upstream: SocketAddr,
    pair: Option<&CertPair>,
    path: &str,
) -> String {
    let p = prefix.display();
    let tls = match pair {
        Some(pair) => format!(
            "ssl_certificate {};\n\
             ssl_certificate_key {};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_session_cache shared:nodefront:1m;\n\
             ssl_session_timeout 1h;\n",
            pair.cert.display(),
            pair.key.display()
        ),
        None => String::new(),
    };
    // What every proxied location says: kept-alive HTTP/1.1 to the upstream, the
    // WebSocket upgrade passed on, nothing spooled to temporary files.
    let proxy = "proxy_pass http://nodefront_node/;\n\
                 proxy_http_version 1.1;\n\
                 proxy_set_header Upgrade $http_upgrade;\n\
                 proxy_set_header Connection $nodefront_connection;\n\
                 proxy_buffering off;\n\
                 proxy_request_buffering off;\n\
                 proxy_connect_timeout 5s;\n\
                 proxy_read_timeout 3600s;\n\
                 proxy_send_timeout 3600s;";
    let base = path.trim_end_matches('/');
    let locations = if base.is_empty() {
        format!("location / {{\n{proxy}\n}}\n")
    } else {
        // `^~` so that no other location can win; `=` for the path without its slash,
        // where the whole URI is replaced by the upstream's `/`.
        format!(
            "location ^~ {base}/ {{\n{proxy}\n}}\n\
             location = {base} {{\n{proxy}\n}}\n\
             location / {{\nreturn 404 \"not the node's path\\n\";\n}}\n"
        )
    };
    format!(
        "{user}worker_processes 1;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         log_format nodefront '{LOG_FORMAT}';\n\
         access_log {p}/logs/access.log nodefront;\n\
         client_body_temp_path {p}/tmp/body;\n\
         proxy_temp_path {p}/tmp/proxy;\n\
         fastcgi_temp_path {p}/tmp/fastcgi;\n\
         uwsgi_temp_path {p}/tmp/uwsgi;\n\
         scgi_temp_path {p}/tmp/scgi;\n\
         default_type text/plain;\n\
         client_max_body_size 0;\n\
         map $http_upgrade $nodefront_connection {{\n\
         default upgrade;\n\
         \"\" \"\";\n\
         }}\n\
         upstream nodefront_node {{\n\
         server {upstream};\n\
         keepalive 16;\n\
         }}\n\
         server {{\n\
         listen 127.0.0.1:{port}{ssl};\n\
         server_name _;\n\
         server_tokens off;\n\
         keepalive_requests 100000;\n\
         keepalive_timeout 300s;\n\
         {tls}\
         {locations}\
         }}\n\
         }}\n",
        user = if is_root() { "user www-data;\n" } else { "" },
        ssl = if pair.is_some() { " ssl" } else { "" },
    )
}

/// Splits a line at its spaces from both ends: the URI in the middle is the one field
/// that could hold one, were a client to send it raw.
fn parse_access(line: &str) -> Access {
    let bad = || panic!("not a NodeFront access log line: {line:?}");
    let mut head = line.splitn(4, ' ');
    let (Some(connection), Some(request), Some(method), Some(rest)) =
        (head.next(), head.next(), head.next(), head.next())
    else {
        bad()
    };
    let mut tail = rest.rsplitn(4, ' ');
    let (Some(reused), Some(host), Some(status), Some(uri)) =
        (tail.next(), tail.next(), tail.next(), tail.next())
    else {
        bad()
    };
    Access {
        connection: connection.parse().unwrap_or_else(|_| bad()),
        request: request.parse().unwrap_or_else(|_| bad()),
        method: method.to_string(),
        uri: uri.to_string(),
        status: status.parse().unwrap_or_else(|_| bad()),
        host: host.to_string(),
        ssl_session_reused: reused.to_string(),
    }
}
