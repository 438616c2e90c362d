//! The `p2` binary: flags → config → run; maps errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use argh::FromArgs;

/// EX_CONFIG from sysexits.h: the unit does not restart on it.
const EX_CONFIG: u8 = 78;

/// p2: an XEP-0357 push app server relaying XMPP push notifications to FCM.
#[derive(FromArgs)]
struct Args {
    /// the JSON config file of the Java p2; without it, P2_* environment variables
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.version {
        println!("p2 {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let env = |name: &str| std::env::var(name).ok();
    let (config, warnings) = match p2::config::Config::load(args.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p2: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let level = if config.debug {
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
    for w in warnings {
        log::warn!("{w}");
    }
    let stop = Arc::new(AtomicBool::new(false));
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
