//! `sqlx::migrate!` embeds `migrations/` at compile time, and on stable Rust cargo does not
//! know it read them: without this line, a new or edited migration would not rebuild the
//! crate, and an incremental build would run without it (sqlx's documented build script,
//! as `sqlx migrate build-script` writes it).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
