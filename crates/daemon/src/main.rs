//! The `novaha` binary: everything lives in the library half (`lib.rs`).

fn main() -> std::process::ExitCode {
    novaha::main_entry()
}
