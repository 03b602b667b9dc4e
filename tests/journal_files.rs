//! The journal's files on disk: created readable by their owner only (the journal itself and
//! the -wal and -shm files SQLite creates beside it), whatever the umask.
//!
//! One test in this binary: it sets the process umask, which every thread shares.

mod journal_common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tapgate::journal::Journal;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn journal_wal_and_shm_are_created_0600_under_a_permissive_umask() {
    // The umask of a shell or of `tapgate tap` run by hand (systemd's unit sets 0077 itself).
    // SAFETY: umask only swaps the process's file mode mask.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut j = Journal::open(&path).unwrap();
    j.begin(&journal_common::new_op("TG-1", 1_790_000_000_000))
        .unwrap();
    // While the connection is open, WAL mode keeps both side files.
    let wal = dir.path().join("journal.db-wal");
    let shm = dir.path().join("journal.db-shm");
    assert!(wal.exists() && shm.exists());
    assert_eq!(mode(&path), 0o600, "journal.db");
    assert_eq!(mode(&wal), 0o600, "journal.db-wal");
    assert_eq!(mode(&shm), 0o600, "journal.db-shm");
    drop(j);

    // A reader (tapgate journal ...) creates nothing wider either.
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.get("TG-1").unwrap().unwrap().partner_reference_no, "TG-1");
    for p in [&path, &wal, &shm] {
        if p.exists() {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
    }

    // An existing file keeps the mode a person gave it: tapgate only reports it (doctor).
    drop(r);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    drop(Journal::open(&path).unwrap());
    assert_eq!(mode(&path), 0o640);
    let open = tapgate::journal::integrity::open_to_others(&path);
    assert_eq!(open, vec![(path.clone(), 0o640)]);
}
