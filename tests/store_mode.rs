//! The database file is created mode 0600 whatever the umask, and SQLite's `-wal` and
//! `-shm` files follow it. A test binary of its own: it sets the process's umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use p2::store::{Caps, NewRegistration, Store};

extern "C" {
    /// umask(2), from the C library every Rust program on Unix links.
    fn umask(mask: u32) -> u32;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_database_and_its_wal_and_shm_files_are_private_under_a_permissive_umask() {
    // SAFETY: umask(2) cannot fail; this binary runs no other test that creates files.
    let old = unsafe { umask(0) };
    let dir = std::env::temp_dir().join(format!("p2-store-mode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("p2.sqlite");
    let mut store = Store::open(&db).unwrap();
    // A write, so that the -wal and -shm files exist while the store is open.
    store
        .register(
            NewRegistration {
                service: "fcm",
                device: "ec164939a8485ee6b7f7871071a11c7bb18aead5",
                channel: "",
                domain: "jabber.de",
                token: "token",
                account: None,
            },
            Caps {
                per_account: 10,
                per_domain: 0,
                may_create: true,
            },
            1_700_000_000,
        )
        .unwrap();
    let files = [
        db.clone(),
        dir.join("p2.sqlite-wal"),
        dir.join("p2.sqlite-shm"),
    ];
    let modes: Vec<String> = files.iter().map(|f| format!("{:o}", mode(f))).collect();
    // A file created by the test itself shows the umask really is permissive.
    let probe = dir.join("probe");
    std::fs::write(&probe, "").unwrap();
    let probe_mode = mode(&probe);
    unsafe { umask(old) };
    assert_eq!(probe_mode, 0o666, "the umask did not take");
    assert_eq!(modes, ["600"; 3], "{files:?}");
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
