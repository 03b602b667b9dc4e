//! `tapgate doctor`.
