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

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    match Config::load(path.as_deref(), &env) {
        Ok((config, warnings)) => {
            for w in warnings {
                log::warn!("{w}");
            }
            Ok(config)
        }
        Err(e) => {
            eprintln!("p2: {e}");
            Err(ExitCode::from(EX_CONFIG))
        }
    }
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
    if let Err(e) = logger.init() {
        eprintln!("p2: cannot start logging: {e}");
    }
}

fn exit(result: Result<String, p2::Error>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(p2::Error::Config(e)) => {
            eprintln!("p2: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("p2: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.version {
        println!("p2 {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match args.command {
        None => {}
        Some(Command::CheckConfig(c)) if c.placeholders => {
            let env = |name: &str| std::env::var(name).ok();
            return match Config::placeholders(c.config.or(args.config).as_deref(), &env) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("p2: {e}");
                    ExitCode::from(EX_CONFIG)
                }
            };
        }
        Some(Command::CheckConfig(c)) => {
            init_logging(false);
            return match load(c.config.or(args.config)) {
                Ok(config) => exit(p2::admin::check_config(&config)),
                Err(code) => code,
            };
        }
        Some(Command::Stats(c)) => {
            init_logging(false);
            return match load(c.config.or(args.config)) {
                Ok(config) => exit(p2::admin::stats(&config)),
                Err(code) => code,
            };
        }
        Some(Command::Prune(c)) => {
            init_logging(false);
            return match load(c.config.or(args.config)) {
                Ok(config) => exit(p2::admin::prune(&config, c.older_than)),
                Err(code) => code,
            };
        }
        Some(Command::Import(c)) => {
            init_logging(false);
            let config = match load(c.config.or(args.config)) {
                Ok(config) => config,
                Err(code) => return code,
            };
            return match p2::admin::import(&config, &c.file) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(p2::admin::ImportFailure::Input(e)) => {
                    eprintln!("p2: {e}");
                    ExitCode::from(EX_DATAERR)
                }
                Err(p2::admin::ImportFailure::Daemon(e)) => exit(Err(e)),
            };
        }
    }

    // The daemon. Warnings go to the log, so start it first.
    let env = |name: &str| std::env::var(name).ok();
    let (config, warnings) = match Config::load(args.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p2: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logging(config.debug);
    for w in warnings {
        log::warn!("{w}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    p2::system::stop_on_signals(Arc::clone(&stop));
    match p2::run(&config, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(p2::Error::Config(e)) => {
            log::error!("{e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
