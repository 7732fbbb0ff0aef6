//! Throw-away PostgreSQL 15 clusters and PgBouncers for the fault tests, so that a test can
//! stop "its" database without disturbing the shared server on 127.0.0.1:5432.
//!
//! A [`Cluster`] lives in a temporary directory (data, Unix socket, log, certificates), owned
//! by the `postgres` user: PostgreSQL and PgBouncer refuse to run as root, so every process
//! here is started with that user's uid and gid. It listens on 127.0.0.1 only, on a free port
//! that it keeps across [`Cluster::stop`] and [`Cluster::start`]. Dropping it stops the server
//! and removes the directory.
//!
//! The calls block (they run `initdb`, `pg_ctl`, `openssl`): from a multi-threaded Tokio test,
//! wrap them in [`blocking`].
#![allow(dead_code)]

use std::{
    fs,
    net::{TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// Where Debian puts the PostgreSQL 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The superuser every cluster is made with.
pub const SUPERUSER: &str = "postgres";

/// Runs blocking work (a `pg_ctl` call, say) without stalling the other tasks of a
/// multi-threaded runtime, such as the service under test.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// A port nothing listens on right now (the OS picks it from the ephemeral range, so never
/// the shared server's 5432).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Whether this process runs as root (then the servers run as `postgres`; otherwise as
/// whoever runs the tests).
fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
    })
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, SUPERUSER])
            .output()
            .expect("run id");
        assert!(output.status.success(), "the postgres user must exist");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    (id("-u"), id("-g"))
}

/// A command that runs as the `postgres` user (when we are root), in `dir`.
fn as_postgres(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    if running_as_root() {
        let (uid, gid) = postgres_ids();
        command.uid(uid).gid(gid);
    }
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    command
}

/// Runs `command` and panics, with its output, unless it succeeds.
fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{what}: could not run: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn chown_to_postgres(path: &Path) {
    if !running_as_root() {
        return;
    }
    run(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path),
        "chown",
    );
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A certificate authority made with the `openssl` CLI.
pub struct CertificateAuthority {
    /// The CA's certificate, for `sslrootcert`.
    pub cert: PathBuf,
    key: PathBuf,
}

impl CertificateAuthority {
    /// A new CA in `dir`, its files named after `name`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-new", "-nodes", "-days", "2"])
                .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-subj", &format!("/CN=todo-api test CA {name}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl: make a CA",
        );
        Self { cert, key }
    }

    /// A leaf certificate for a server at 127.0.0.1 (CN and IP SAN), signed by this CA;
    /// returns the certificate and key paths.
    pub fn issue_server_certificate(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        let request = dir.join(format!("{name}.csr"));
        let extensions = dir.join(format!("{name}.ext"));
        fs::write(
            &extensions,
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1\n",
        )
        .expect("write the certificate extensions");
        run(
            Command::new("openssl")
                .args(["req", "-new", "-nodes"])
                .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-subj", "/CN=127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&request),
            "openssl: make a certificate request",
        );
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
                .arg("-in")
                .arg(&request)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&extensions)
                .arg("-out")
                .arg(&cert),
            "openssl: sign the server certificate",
        );
        (cert, key)
    }
}

/// How a [`Cluster`] is made.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Require TLS on TCP (`hostssl` only) with a certificate from a CA of the cluster's own.
    pub tls: bool,
    /// Give the superuser this password and require it (SCRAM) on TCP; trust otherwise.
    pub password: Option<String>,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<String>,
}

/// A PostgreSQL 15 cluster of a test's own.
pub struct Cluster {
    dir: TempDir,
    pub port: u16,
    password: Option<String>,
    /// The CA that signed the server certificate, when made with TLS.
    pub ca: Option<CertificateAuthority>,
    running: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Initialises a trust-authenticated cluster and starts it.
    pub fn start_new() -> Self {
        let cluster = Self::init(ClusterOptions::default());
        cluster.start();
        cluster
    }

    /// Initialises a cluster (`initdb`), without starting it.
    pub fn init(options: ClusterOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("todo-pg-")
            .tempdir()
            .expect("temporary directory");
        let root = dir.path().to_owned();
        let port = free_port();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        // initdb, running as postgres, creates the data directory in here.
        chown_to_postgres(&root);
        let data = root.join("data");

        let mut initdb = as_postgres(Path::new(PG_BIN).join("initdb"), &root);
        initdb.arg("-D").arg(&data).args([
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        if let Some(password) = &options.password {
            let file = root.join("pwfile");
            fs::write(&file, password).expect("write the password file");
            chown_to_postgres(&file);
            initdb
                .arg(format!("--pwfile={}", file.display()))
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        } else {
            initdb.args(["--auth=trust"]);
        }
        run(&mut initdb, "initdb");

        let ca = options.tls.then(|| {
            let tls = root.join("tls");
            fs::create_dir(&tls).expect("tls directory");
            let ca = CertificateAuthority::new(&tls, "ca");
            ca.issue_server_certificate(&tls, "server");
            chown_to_postgres(&tls);
            fs::set_permissions(tls.join("server.key"), fs::Permissions::from_mode(0o600))
                .expect("chmod the server key");
            ca
        });

        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("unix_socket_directories = '{}'", root.display()),
            "fsync = off".to_owned(),
            "synchronous_commit = off".to_owned(),
            "full_page_writes = off".to_owned(),
            "max_connections = 100".to_owned(),
            "shared_buffers = 16MB".to_owned(),
        ];
        if ca.is_some() {
            let tls = root.join("tls");
            conf.push("ssl = on".to_owned());
            conf.push(format!(
                "ssl_cert_file = '{}'",
                tls.join("server.crt").display()
            ));
            conf.push(format!(
                "ssl_key_file = '{}'",
                tls.join("server.key").display()
            ));
        }
        conf.extend(options.settings.iter().cloned());
        let mut postgresql_conf = fs::read_to_string(data.join("postgresql.conf"))
            .expect("read postgresql.conf")
            + "\n# todo-api fault tests\n";
        postgresql_conf += &conf.join("\n");
        postgresql_conf += "\n";
        fs::write(data.join("postgresql.conf"), postgresql_conf).expect("write postgresql.conf");

        let method = if options.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let hba = if ca.is_some() {
            format!(
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 {method}\n\
                 hostnossl all all 127.0.0.1/32 reject\n"
            )
        } else {
            format!("local all all trust\nhost all all 127.0.0.1/32 {method}\n")
        };
        fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        chown_to_postgres(&root);

        Self {
            dir,
            port,
            password: options.password,
            ca,
            running: false.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn pg_ctl(&self) -> Command {
        let mut command = as_postgres(Path::new(PG_BIN).join("pg_ctl"), self.dir());
        command.arg("-D").arg(self.data());
        command
    }

    /// Starts the server (on the same port every time) and waits until it accepts
    /// connections.
    pub fn start(&self) {
        let output = self
            .pg_ctl()
            .arg("-l")
            .arg(self.dir().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl start");
        assert!(
            output.status.success(),
            "pg_ctl start failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        self.running
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the server the way an operator (or Neon suspending a compute) does: sessions
    /// are terminated, then the server shuts down.
    pub fn stop(&self) {
        self.stop_with_mode("fast");
    }

    /// Stops the server as a crash would.
    pub fn stop_immediately(&self) {
        self.stop_with_mode("immediate");
    }

    fn stop_with_mode(&self, mode: &str) {
        run(
            self.pg_ctl().args(["-w", "-t", "60", "-m", mode, "stop"]),
            "pg_ctl stop",
        );
        self.running
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }

    /// A URL for `database` over TCP, as the superuser (with its password, if it has one).
    pub fn url(&self, database: &str) -> String {
        let credentials = match &self.password {
            Some(password) => format!("{SUPERUSER}:{password}"),
            None => SUPERUSER.to_owned(),
        };
        format!(
            "postgres://{credentials}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs SQL through `psql` over the Unix socket (always trusted) and returns its
    /// unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let output = run(
            as_postgres(Path::new(PG_BIN).join("psql"), self.dir())
                .arg("-h")
                .arg(self.dir())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", sql]),
            "psql",
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!(r#"CREATE DATABASE "{name}""#));
        self.url(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self
                .pg_ctl()
                .args(["-w", "-t", "30", "-m", "immediate", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The TempDir removes the directory after this.
    }
}

/// A PgBouncer of a test's own, in front of a [`Cluster`].
pub struct PgBouncer {
    dir: TempDir,
    pub port: u16,
    child: Child,
}

impl PgBouncer {
    /// The `pgbouncer` binary: on the `PATH`, or where Debian's package puts it.
    pub fn binary() -> PathBuf {
        let on_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join("pgbouncer"))
            .find(|candidate| candidate.is_file());
        let binary = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"));
        assert!(
            binary.is_file(),
            "pgbouncer is not installed: apt-get install -y pgbouncer"
        );
        binary
    }

    /// Starts PgBouncer in transaction mode with `pool_size` server connections per database
    /// and user, trusting every client, and waits until it listens.
    pub fn start_transaction_mode(cluster: &Cluster, pool_size: u32) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("todo-pgbouncer-")
            .tempdir()
            .expect("temporary directory");
        let root = dir.path();
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let port = free_port();
        fs::write(root.join("userlist.txt"), format!("\"{SUPERUSER}\" \"\"\n"))
            .expect("write userlist.txt");
        let config = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={cluster_port}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {root}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {root}/pgbouncer.log\n\
             pidfile = {root}/pgbouncer.pid\n\
             admin_users = {SUPERUSER}\n",
            cluster_port = cluster.port,
            root = root.display(),
        );
        fs::write(root.join("pgbouncer.ini"), config).expect("write pgbouncer.ini");
        chown_to_postgres(root);
        let child = as_postgres(Self::binary(), root)
            .arg(root.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let mut bouncer = Self { dir, port, child };
        if !wait_for_port(port, Duration::from_secs(15)) {
            let status = bouncer.child.try_wait().ok().flatten();
            panic!(
                "pgbouncer did not listen on {port} (exit status {status:?}); its log:\n{}",
                bouncer.log()
            );
        }
        bouncer
    }

    /// A URL for `database` through this PgBouncer, saying so (`pgbouncer=true`).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{database}?pgbouncer=true",
            self.port
        )
    }

    /// The same URL without `pgbouncer=true`: what a user who forgot it would configure.
    pub fn url_without_marker(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
