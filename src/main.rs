//! The `p2` binary: flags → config → run or an admin subcommand; maps errors to exit
//! codes (78 for configuration, 65 for bad import data, 1 otherwise).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use argh::FromArgs;
use p2::config::Config;

/// EX_CONFIG from sysexits.h: the unit does not restart on it.
const EX_CONFIG: u8 = 78;
/// EX_DATAERR from sysexits.h: malformed input data.
const EX_DATAERR: u8 = 65;

/// p2: an XEP-0357 push app server relaying XMPP push notifications to FCM. Without a
/// subcommand it runs the daemon.
#[derive(FromArgs)]
struct Args {
    /// the JSON config file (the Java p2's works unchanged); without it, P2_* variables
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    CheckConfig(CheckConfig),
    Stats(Stats),
    Prune(Prune),
    Import(Import),
}

/// validate the configuration and credentials and print the effective settings
#[derive(FromArgs)]
#[argh(subcommand, name = "check-config")]
struct CheckConfig {
    /// the JSON config file
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// only refuse the example's placeholder jid and sharedSecret (exit 78), for the
    /// unit's ExecCondition=; any other problem is left to the daemon
    #[argh(switch)]
    placeholders: bool,
}

/// print registrations per service and per domain, their age and the database size
#[derive(FromArgs)]
#[argh(subcommand, name = "stats")]
struct Stats {
    /// the JSON config file
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

/// delete registrations not refreshed for DAYS days (dead installs)
#[derive(FromArgs)]
#[argh(subcommand, name = "prune")]
struct Prune {
    /// the JSON config file
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// age in days of the last refresh beyond which a registration is deleted
    #[argh(option)]
    older_than: u32,
}

/// import the Java p2's target table exported by `mysql --batch` (tab-separated)
#[derive(FromArgs)]
#[argh(subcommand, name = "import")]
struct Import {
    /// the JSON config file
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// the export file
    #[argh(positional)]
    file: PathBuf,
}

/// Why p2 exits with a status other than 0.
enum Failure {
    /// The configuration is invalid: 78 (the unit does not restart).
    Config(String),
    /// The import file is malformed: 65.
    Data(String),
    /// Anything else: 1.
    Other(String),
}

impl Failure {
    fn code(&self) -> ExitCode {
        match self {
            Failure::Config(_) => ExitCode::from(EX_CONFIG),
            Failure::Data(_) => ExitCode::from(EX_DATAERR),
            Failure::Other(_) => ExitCode::FAILURE,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Config(m) | Failure::Data(m) | Failure::Other(m) => m,
        }
    }
}

impl From<p2::Error> for Failure {
    fn from(e: p2::Error) -> Failure {
        match e {
            p2::Error::Config(e) => Failure::Config(e.to_string()),
            e => Failure::Other(e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let daemon = args.command.is_none() && !args.version;
    match try_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // The daemon reports through its log; the subcommands on stderr.
            if daemon && log::max_level() != log::LevelFilter::Off {
                log::error!("{}", failure.message());
            } else {
                eprintln!("p2: {}", failure.message());
            }
            failure.code()
        }
    }
}

/// Runs what the flags ask for.
fn try_main(args: Args) -> Result<(), Failure> {
    if args.version {
        println!("p2 {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let print = |text: String| print!("{text}");
    match args.command {
        Some(Command::CheckConfig(c)) if c.placeholders => {
            let env = |name: &str| std::env::var(name).ok();
            Config::placeholders(c.config.or(args.config).as_deref(), &env)
                .map_err(|e| Failure::Config(e.to_string()))?;
        }
        Some(Command::CheckConfig(c)) => {
            let config = load(c.config.or(args.config))?;
            print(p2::admin::check_config(&config)?);
        }
        Some(Command::Stats(c)) => {
            let config = load(c.config.or(args.config))?;
            print(p2::admin::stats(&config)?);
        }
        Some(Command::Prune(c)) => {
            let config = load(c.config.or(args.config))?;
            print(p2::admin::prune(&config, c.older_than)?);
        }
        Some(Command::Import(c)) => {
            let config = load(c.config.or(args.config))?;
            let text = p2::admin::import(&config, &c.file).map_err(|e| match e {
                p2::admin::ImportFailure::Input(e) => Failure::Data(e),
                p2::admin::ImportFailure::Daemon(e) => Failure::from(e),
            })?;
            print(text);
        }
        None => {
            // The daemon. Warnings go to the log, so start it first.
            let env = |name: &str| std::env::var(name).ok();
            let (config, warnings) = Config::load(args.config.as_deref(), &env)
                .map_err(|e| Failure::Config(e.to_string()))?;
            init_logging(config.debug);
            for w in warnings {
                log::warn!("{w}");
            }
            let stop = Arc::new(AtomicBool::new(false));
            p2::system::stop_on_signals(Arc::clone(&stop));
            p2::run(&config, stop)?;
        }
    }
    Ok(())
}

/// The configuration of a subcommand: from `path`, or the `P2_*` variables. Logging
/// starts first (at info), so the configuration's warnings are seen.
fn load(path: Option<PathBuf>) -> Result<Config, Failure> {
    init_logging(false);
    let env = |name: &str| std::env::var(name).ok();
    let (config, warnings) =
        Config::load(path.as_deref(), &env).map_err(|e| Failure::Config(e.to_string()))?;
    for w in warnings {
        log::warn!("{w}");
    }
    Ok(config)
}

fn init_logging(debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    // RUST_LOG, when set, overrides the level. The HTTP and TLS crates stay at info:
    // at trace they dump raw requests, bearer tokens included.
    let logger = simple_logger::SimpleLogger::new()
        .with_level(level)
        .env()
        .with_module_level("ureq", log::LevelFilter::Info)
        .with_module_level("ureq_proto", log::LevelFilter::Info)
        .with_module_level("rustls", log::LevelFilter::Info);
    match logger.init() {
        // Says which level is in force (`RUST_LOG` may have set another).
        Ok(()) => log::debug!("log level {}", log::max_level()),
        Err(e) => eprintln!("p2: cannot start logging: {e}"),
    }
}
