//! Rebuilds when a migration is added or edited: `sqlx::migrate!` embeds `migrations/` and
//! `examples/blog/migrations/` at compile time, and cargo cannot see that on its own (stable
//! Rust has no tracked paths).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=examples/blog/migrations");
}
