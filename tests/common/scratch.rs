//! Scratch directories: removed when the test that made them passes, kept when it fails
//! (their path is printed, to look at what the daemon left).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory, unique to this call; see the module's documentation.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Under the cargo target dir (`target/tmp`).
    pub fn new(name: &str) -> Scratch {
        Scratch::new_in(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
    }

    /// On tmpfs (`/dev/shm`) where there is one, else the system's temporary
    /// directory: SQLite's fsyncs cost nothing there.
    pub fn in_memory(name: &str) -> Scratch {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            Scratch::new_in(shm, name)
        } else {
            Scratch::new_in(&std::env::temp_dir(), name)
        }
    }

    /// Under `base`.
    pub fn new_in(base: &Path, name: &str) -> Scratch {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = base.join(format!(
            "p2-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for a look", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
