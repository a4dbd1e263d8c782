//! The `hush` binary; everything lives in the library (`hush::cli`).

fn main() -> std::process::ExitCode {
    hush::cli::main()
}
