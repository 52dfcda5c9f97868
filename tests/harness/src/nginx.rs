//! The real nginx (Debian's nginx-light) with the site configuration from `conf/nginx/`,
//! on a loopback port with a private prefix, stopped when dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{eventually_blocking, listens};

/// The checkout's `conf/nginx/`, which holds the shipped site.
const SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf/nginx");

pub struct Nginx {
    pub port: u16,
    prefix: PathBuf,
    child: Child,
}

pub fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("nginx is needed; install it: apt-get install -y nginx-light"))
}

/// nginx in the foreground with the configuration `conf` under the private folder
/// `prefix`, its stdio closed: workers inherit it, and a pipe would keep the test
/// runner waiting. Every nginx the tests and benchmarks start is this command.
pub fn command(prefix: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new(nginx_bin());
    cmd.arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The TLS variant's certificate: self-signed for 127.0.0.1, made with openssl.
#[derive(Clone)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
}

impl Nginx {
    /// nginx with the shipped site around `routes` (the file the runtime writes on
    /// deploy), on 127.0.0.1:`port`, under the private folder `prefix`: plain HTTP with
    /// basic auth unless the builder says otherwise.
    pub fn builder(prefix: &Path, routes: &Path, port: u16) -> NginxBuilder {
        NginxBuilder {
            prefix: prefix.to_path_buf(),
            routes: routes.to_path_buf(),
            port,
            tls: None,
            extra_http: String::new(),
            auth: true,
            workers: "1",
            edits: Vec::new(),
        }
    }

    /// nginx offers no readiness signal in the foreground; look at its port, bounded.
    fn wait_listening(&mut self) {
        let (port, error_log) = (self.port, self.prefix.join("logs/error.log"));
        eventually_blocking("nginx listens", Duration::from_secs(10), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                panic!("nginx exited with {status}: {log}");
            }
            listens(port)
        });
    }

    /// The master and its worker processes.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

/// One nginx to start: made by [`Nginx::builder`], started by [`NginxBuilder::start`].
pub struct NginxBuilder {
    prefix: PathBuf,
    routes: PathBuf,
    port: u16,
    tls: Option<Tls>,
    extra_http: String,
    auth: bool,
    workers: &'static str,
    edits: Vec<(String, String)>,
}

impl NginxBuilder {
    /// `worker_processes`: 1 unless set (a benchmark pins that one worker); Debian's
    /// own nginx.conf says `auto`, one per core.
    pub fn workers(mut self, workers: &'static str) -> Self {
        self.workers = workers;
        self
    }

    /// The TLS variant of the site, with this certificate.
    pub fn tls(mut self, tls: &Tls) -> Self {
        self.tls = Some(tls.clone());
        self
    }

    /// Directives added to the http {} block.
    pub fn extra_http(mut self, directives: &str) -> Self {
        self.extra_http = directives.to_string();
        self
    }

    /// The shipped locations with `from` (which must be there) replaced by `to`: a
    /// benchmark's variant of the site.
    pub fn edit(mut self, from: &str, to: &str) -> Self {
        self.edits.push((from.to_string(), to.to_string()));
        self
    }

    /// `auth_basic off`: a benchmark's baseline.
    pub fn without_auth(mut self) -> Self {
        self.auth = false;
        self
    }

    /// Renders the site and starts nginx in the foreground under the prefix, with one
    /// worker; returns once it listens.
    pub fn start(self) -> Nginx {
        let Self {
            prefix,
            routes,
            port,
            tls,
            extra_http,
            auth,
            workers,
            edits,
        } = self;
        for dir in ["logs", "tmp", "conf"] {
            std::fs::create_dir_all(prefix.join(dir)).unwrap();
        }
        let conf = Path::new(SITE);
        let locations = prefix.join("conf/ya-runtime-erigon-locations.conf");
        let mut shipped =
            std::fs::read_to_string(conf.join("ya-runtime-erigon-locations.conf")).unwrap();
        let error_log = prefix.join("logs/error.log");
        shipped = shipped.replace("@ERROR_LOG@", &error_log.display().to_string());
        for (from, to) in &edits {
            assert!(shipped.contains(from.as_str()), "no {from:?} in the site");
            shipped = shipped.replace(from.as_str(), to);
        }
        if !auth {
            let auth = "auth_basic \"ya-runtime-erigon\";";
            assert!(shipped.contains(auth));
            shipped = shipped.replace(auth, "auth_basic off;");
        }
        std::fs::write(&locations, shipped).unwrap();
        let template = if tls.is_some() {
            "ya-runtime-erigon-tls.conf"
        } else {
            "ya-runtime-erigon.conf"
        };
        let mut site = std::fs::read_to_string(conf.join(template))
            .unwrap()
            .replace("@ROUTES@", &routes.display().to_string())
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@HTTP_LISTEN@", &format!("127.0.0.1:{}", free_port()))
            .replace("@SERVER_NAME@", "localhost")
            .replace("@LOCATIONS@", &locations.display().to_string());
        if let Some(tls) = &tls {
            site = site
                .replace("@CERT@", &tls.cert.display().to_string())
                .replace("@KEY@", &tls.key.display().to_string());
        }
        for placeholder in [
            "@ROUTES@",
            "@LISTEN@",
            "@HTTP_LISTEN@",
            "@SERVER_NAME@",
            "@LOCATIONS@",
            "@CERT@",
            "@KEY@",
        ] {
            assert!(!site.contains(placeholder), "{placeholder} left in {site}");
        }
        std::fs::write(prefix.join("conf/site.conf"), site).unwrap();
        let tmp = prefix.join("tmp").display().to_string();
        let main = format!(
            "{user}worker_processes {workers};\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/logs/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log {p}/logs/access.log;\n\
               client_body_temp_path {tmp}/body;\n\
               proxy_temp_path {tmp}/proxy;\n\
               fastcgi_temp_path {tmp}/fastcgi;\n\
               uwsgi_temp_path {tmp}/uwsgi;\n\
               scgi_temp_path {tmp}/scgi;\n\
               include {p}/conf/site.conf;\n\
               {extra_http}\n\
             }}\n",
            user = if is_root() { "user www-data;\n" } else { "" },
            p = prefix.display(),
        );
        std::fs::write(prefix.join("conf/nginx.conf"), main).unwrap();
        if is_root() {
            chown_tree_group(&prefix.join("tmp"), "www-data");
            let _ = Command::new("chown")
                .args(["-R", "www-data"])
                .arg(prefix.join("tmp"))
                .status();
        }
        let child = command(&prefix, &prefix.join("conf/nginx.conf"))
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            port,
            prefix,
            child,
        };
        nginx.wait_listening();
        nginx
    }
}

impl Drop for Nginx {
    /// SIGTERM is nginx's fast shutdown: the master stops its workers, then exits.
    /// (SIGKILL would orphan the workers.)
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// What the provider set-up does for the password folder: owned by the provider, group
/// of nginx's workers, setgid so every file created in it inherits that group, and no
/// access for anyone else. The HOME above it lets others traverse but not list.
pub fn prepare_auth_dir(root: &Path) {
    let auth = root.join("auth");
    std::fs::create_dir_all(&auth).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
    if is_root() {
        chown_tree_group(&auth, "www-data");
    }
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o2750)).unwrap();
}

fn chown_tree_group(path: &Path, group: &str) {
    let status = Command::new("chgrp")
        .args(["-R", group])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chgrp {group} {}", path.display());
}

impl Tls {
    pub fn self_signed(dir: &Path) -> Self {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap_or_else(|e| {
                panic!("openssl is needed ({e}); install it: apt-get install -y openssl")
            });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { cert, key }
    }
}
