//! dlc-filetests: file-driven tests. Inputs live under `tests/filetests/`; snapshots of
//! the IR each input imports to (or of the error it gives) live beside the test code in
//! `tests/snapshots/` and are reviewed with `cargo insta review`.
