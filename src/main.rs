//! The `edge-gateway` command line: run, check-config, default-config, probe, hash-password.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edge_gateway::config::{self, DEFAULT_CONFIG_TOML};
use edge_gateway::sources::modbus as probe;
use edge_gateway::{Gateway, Options, systemd, telemetry};

#[derive(Parser)]
#[command(
    name = "edge-gateway",
    version,
    about = "Edge gateway for factory-floor IoT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// TOML configuration file (every key optional; see `default-config`)
        /// [default: $CONFIGURATION_DIRECTORY/edge-gateway.toml if it exists].
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Run N simulated devices (parsed like MQTT publishes, straight into the pipeline).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "8")]
        simulate: Option<usize>,
        /// Where the store lives [default: $STATE_DIRECTORY, else ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run as a central relay replica: read what gateways write to the central Redis
    /// (`[sinks.redis]`, `[relay]`) and serve it to dashboards with the same API.
    Relay {
        /// TOML configuration file, the gateway's format [default: as for `run`].
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where the replica's store lives [default: $STATE_DIRECTORY, else ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a configuration file (with the current environment's overrides) and exit.
    CheckConfig { file: PathBuf },
    /// Print the full, commented default configuration.
    DefaultConfig,
    /// Read one configured Modbus device once with its firmware profile and print the decoded
    /// values (commissioning). Exit code 1 if the device does not answer.
    Probe {
        /// The device's `device_id` in `[[modbus.devices]]`.
        device_id: String,
        /// TOML configuration file [default: $CONFIGURATION_DIRECTORY/edge-gateway.toml].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Read a device password from stdin (one line) and print its argon2 PHC string for
    /// `[[mqtt.users]] password_hash`.
    HashPassword,
}

/// glibc gives a thread that finds the heap busy an arena of its own, up to 8 per core, and
/// each arena keeps what was freed in it. With the runtime's workers and the store reads'
/// blocking threads that was a fifth of the memory with 10,000 dashboards past saturation
/// (peak RSS 254 MiB with the default, 197 MiB with 2 arenas; README, "Memory under
/// overload"). Two are enough for a 2–4 core gateway.
#[cfg(target_env = "gnu")]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called first thing in main, before
    // this program starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(target_env = "gnu"))]
fn limit_malloc_arenas() {}

/// Exit code for configuration errors, distinct from run-time failures (1).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    limit_malloc_arenas();
    abort_on_uncontained_panics();
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => match config::load(Some(&file), std::env::vars()) {
            Ok(loaded) => {
                if let Some(warning) = readable_secrets(&file, &loaded) {
                    eprintln!("edge-gateway: warning: {warning}");
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edge-gateway: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Probe { device_id, config } => probe(device_id, config),
        Command::HashPassword => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("edge-gateway: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("edge-gateway: empty password");
                return ExitCode::from(EXIT_CONFIG);
            }
            match edge_gateway::sources::mqtt::hash_password(password) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("edge-gateway: cannot hash: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            simulate,
            data_dir,
        } => {
            let loaded = match load_for_service(config) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let options = Options {
                data_dir: config::data_dir(data_dir, std::env::var("STATE_DIRECTORY").ok()),
                simulate,
            };
            let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            exit_code(runtime.block_on(run(loaded.config, options)))
        }
        Command::Relay { config, data_dir } => relay(config, data_dir),
    }
}

/// `edge-gateway relay`: a config without a feed is a config error (exit 2).
fn relay(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> ExitCode {
    let loaded = match load_for_service(config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let c = &loaded.config;
    if !edge_gateway::relay::reads_redis(c) && !edge_gateway::relay::reads_kafka(c) {
        eprintln!(
            "edge-gateway: {}",
            edge_gateway::GatewayError::RelayWithoutSource
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let options = Options {
        data_dir: config::data_dir(data_dir, std::env::var("STATE_DIRECTORY").ok()),
        simulate: None,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    exit_code(runtime.block_on(run_relay(loaded.config, options)))
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("edge-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--config`, else `$CONFIGURATION_DIRECTORY/edge-gateway.toml` (systemd), else defaults;
/// environment overrides applied; logging set up from it. A bad config is exit code 2.
fn load_for_service(config: Option<PathBuf>) -> Result<config::Loaded, ExitCode> {
    let config = config
        .or_else(|| config::systemd_config_file(std::env::var("CONFIGURATION_DIRECTORY").ok()));
    match config::load(config.as_deref(), std::env::vars()) {
        Ok(loaded) => {
            telemetry::init_logging(&loaded.config.log.level);
            if let Some(warning) = config.as_deref().and_then(|f| readable_secrets(f, &loaded)) {
                tracing::warn!("{warning}");
            }
            Ok(loaded)
        }
        Err(e) => {
            eprintln!("edge-gateway: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// A config file holding secrets that group or others may read: names the keys, never values.
fn readable_secrets(file: &std::path::Path, loaded: &config::Loaded) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let keys = loaded.secrets_in_file();
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    if keys.is_empty() || mode & 0o077 == 0 {
        return None;
    }
    Some(format!(
        "{} holds secrets ({}) and is readable by group or others (mode {mode:03o}): \
         chmod 600 it, or move them to `*_file` keys or systemd credentials",
        file.display(),
        keys.join(", ")
    ))
}

fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("edge-gateway: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn probe(device_id: String, config: Option<PathBuf>) -> ExitCode {
    let loaded = match load_for_service(config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let modbus = &loaded.config.modbus;
    match runtime.block_on(probe::probe(modbus, &device_id)) {
        Ok(values) => {
            let d = modbus
                .devices
                .iter()
                .find(|d| d.device_id == device_id)
                .expect("probe found the device");
            let via = if d.is_rtu() {
                format!("{} slave {}", d.port, d.slave_id)
            } else {
                format!("{} unit {}", d.endpoint, d.unit_id)
            };
            println!("{device_id} ({}, {via}):", d.profile);
            for v in values {
                println!(
                    "  {:<24} {:>14} {:<6} (fc {}, address {})",
                    v.sensor_type,
                    format!("{}", v.value),
                    v.unit,
                    v.function_code,
                    v.address
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ probe::ProbeError::Config(_)) => {
            eprintln!("edge-gateway: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("edge-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config, options: Options) -> anyhow::Result<()> {
    // Before anything serves: a SIGHUP or SIGTERM from then on is handled, never fatal.
    let signals = Signals::new()?;
    let gateway = Gateway::start(config, options).await?;
    systemd::ready();
    tokio::spawn(systemd::watchdog(
        gateway.health().clone(),
        gateway.stopping(),
    ));
    signals.wait_for_stop().await?;
    systemd::stopping();
    tracing::info!("shutting down: stopping ingest, committing what is pending");
    gateway.stop().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn run_relay(config: config::Config, options: Options) -> anyhow::Result<()> {
    let signals = Signals::new()?;
    let relay = edge_gateway::relay::Relay::start(config, options).await?;
    systemd::ready();
    tokio::spawn(systemd::watchdog(relay.health().clone(), relay.stopping()));
    signals.wait_for_stop().await?;
    systemd::stopping();
    tracing::info!("shutting down: stopping the feed, committing what is pending");
    relay.stop().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The process's signal handlers. SIGHUP (`systemctl reload`) never ends the process: the TLS
/// listeners reload their certificates on it when they are configured, nothing else reloads.
struct Signals {
    term: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns on SIGTERM or SIGINT.
    async fn wait_for_stop(mut self) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => return Ok(r?),
                _ = self.term.recv() => return Ok(()),
                _ = self.hangup.recv() => tracing::info!(
                    "SIGHUP: TLS certificates reload when configured; other settings need a restart"
                ),
            }
        }
    }
}

/// Any panic aborts the process, as `panic = "abort"` would (a half-dead gateway is worse than
/// a restart by systemd), except a redb panic the store contains: damage met mid-read fails
/// that read only.
fn abort_on_uncontained_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        if !edge_gateway::store::panic_is_contained() {
            std::process::abort();
        }
    }));
}
