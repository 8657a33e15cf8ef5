//! Rebuilds when a migration is added or edited: `sqlx::migrate!` embeds `migrations/` at
//! compile time, and cargo cannot see that on its own (stable Rust has no tracked paths).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
