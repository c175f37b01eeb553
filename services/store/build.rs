// sqlx::migrate! embeds the migrations at compile time: rebuild when one is added.
// The same for the query macros' offline data when it is regenerated.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // The query macros read `.sqlx/` (offline data), which stable rustc does not track.
    println!("cargo:rerun-if-changed=../../.sqlx");
}
