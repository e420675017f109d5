fn main() -> std::process::ExitCode {
    codex_proxy::cli::main()
}
